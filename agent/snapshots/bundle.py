"""The node bundle: what a rebuilt node needs that etcd does not hold, archived beside each snapshot.

A snapshot holds no certificates: a restore onto rebuilt nodes needs the
etcd CA and keys (``/etc/kubernetes/pki``), the static-pod manifests and the
kubeadm config. The bundle is a tar of ``[bundle] paths`` (the missing ones
skipped) with modes, owners and times, streamed through ``age`` to the
``[bundle] encrypt_to`` recipients into ``<snapshot>.bundle.age``. Without a
recipient it is written as ``<snapshot>.bundle.tar`` (0600) and never leaves
the node: ``bundle.fetch`` serves encrypted bundles only, and
``etcdguard-agent check`` warns. Either file is written by temp + fsync +
rename, so a half-written bundle never shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.config import BundleSettings
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common.base import agekeys, fsutil
from etcdguard.common.base.errors import EtcdguardError

log = logging.getLogger(__name__)

_digests: dict[tuple[str, int, int], str] = {}


class BundleError(EtcdguardError):
    """The node bundle could not be written; the snapshot itself is unaffected."""


def present(paths: Sequence[Path]) -> list[Path]:
    """The configured paths that exist here (a kubeadm config file is optional, say)."""
    return [p for p in paths if p.exists() or p.is_symlink()]


def write_bundle(settings: BundleSettings, store: SnapshotStore, snapshot_name: str) -> Optional[Path]:
    """Archive ``settings.paths`` beside ``snapshot_name``; the file written, or None when nothing exists."""
    found = present(settings.paths)
    if not found:
        log.info("bundle: none of %s exists here; no bundle", ", ".join(map(str, settings.paths)))
        return None
    encrypted = bool(settings.encrypt_to)
    final = store.bundle_path(snapshot_name, encrypted)
    try:
        with fsutil.atomic_writer(final) as out:
            if encrypted:
                _encrypted_tar(found, settings.encrypt_to, out)
            else:
                _tar(found, out)
    except (OSError, tarfile.TarError, agekeys.AgeError) as exc:
        raise BundleError(f"bundle of {snapshot_name}: {exc}") from None
    log.info("bundle: %s (%s) beside %s", final.name, ", ".join(map(str, found)), snapshot_name)
    return final


def _tar(paths: Sequence[Path], out: Any) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            tar.add(str(path), arcname=str(path).lstrip("/"), recursive=True)


def _encrypted_tar(paths: Sequence[Path], recipients: Sequence[str], out: Any) -> None:
    argv = [agekeys.find_age()]
    for r in recipients:
        argv += ["-r", r]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out.fileno(), stderr=errors, close_fds=True)
        assert proc.stdin is not None
        try:
            with proc.stdin:
                _tar(paths, proc.stdin)
        except BrokenPipeError:
            pass   # age's exit status says why
        finally:
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise agekeys.AgeError(f"age exited with {code}: {errors.read(2000).decode('utf-8', 'replace').strip()}")


def read_chunk(store: SnapshotStore, name: str, offset: int, size: int) -> tuple[dict[str, Any], bytes]:
    """One chunk of the encrypted bundle of snapshot ``name``, as the ``bundle.fetch`` reply carries it."""
    from etcdguard.agent.control.transfer import NotFound
    from etcdguard.common.wire.protocol import BAD_REQUEST, ProtocolError

    path = store.bundle_path(name, True)
    if not path.is_file():
        if store.bundle_path(name, False).is_file():
            raise NotFound(f"the bundle of {name} is not encrypted ([bundle] has no encrypt_to), so it stays on "
                           "this node")
        raise NotFound(f"no node bundle beside snapshot {name!r} on this node")
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if offset > st.st_size:
            raise ProtocolError(BAD_REQUEST, f"offset {offset} is past the end of {path.name} ({st.st_size} bytes)")
        fh.seek(offset)
        data = fh.read(size)
        key = (str(path), st.st_mtime_ns, st.st_size)
        digest = _digests.get(key)
        if digest is None:
            fh.seek(0)
            h = hashlib.sha256()
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            digest = _digests[key] = h.hexdigest()
            with contextlib.suppress(KeyError):
                while len(_digests) > 64:
                    _digests.pop(next(iter(_digests)))
    return ({"name": name, "offset": offset, "size": len(data), "total": st.st_size, "sha256": digest,
             "eof": offset + len(data) == st.st_size}, data)
