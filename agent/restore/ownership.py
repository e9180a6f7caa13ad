"""Restored data owned as etcd expects: the owner, group, mode and SELinux label of the live data.

The restore tool runs as the agent's user (root); etcd runs as its own
(kubeadm: root, packages: etcd). Every file and directory of a restored copy
takes the owner and group (and the SELinux label) of the live ``member``
directory, the top directory also its mode, and is fsync'd, before it is
swapped in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from etcdguard.common.base import fsutil

SELINUX_XATTR = "security.selinux"


def copy_ownership_and_sync(reference: Path, tree: Path) -> int:
    """Give ``tree`` the owner, group (and SELinux label) of ``reference``; the top dir also
    its mode. fsync every file and directory. Returns the bytes in the tree."""
    st = os.stat(reference)
    label: Optional[bytes] = None
    with contextlib.suppress(OSError, AttributeError):
        label = os.getxattr(reference, SELINUX_XATTR)
    total = 0
    for root, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            _adopt(os.path.join(root, name), st, label)
        for f in files:
            path = os.path.join(root, f)
            total += os.lstat(path).st_size
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsutil.fsync_dir(Path(root))
    _adopt(str(tree), st, label)
    os.chmod(tree, st.st_mode & 0o7777)
    return total


def _adopt(path: str, st: os.stat_result, label: Optional[bytes]) -> None:
    os.lchown(path, st.st_uid, st.st_gid)
    if label is not None:
        with contextlib.suppress(OSError):
            os.setxattr(path, SELINUX_XATTR, label, follow_symlinks=False)
