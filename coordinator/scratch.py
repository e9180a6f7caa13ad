"""Which etcd the coordinator's scratch members run: restore drills and point-in-time builds.

Both restore a snapshot into a throwaway single-member etcd on this host
(common/etcd/scratch.py). The binaries come from ``[scratch]`` (``etcd``,
``tool``) or, unset, from PATH; a host without them gets one error saying
what to install or set, when a drill or a point-in-time build needs them,
never at start.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from etcdguard.common.base.errors import ToolError
from etcdguard.common.etcd.scratch import EtcdBinaries
from etcdguard.common.snapshot.tools import SnapshotTool, find_tool
from etcdguard.coordinator.config import CoordinatorConfig

NO_ETCD = ("no etcd server on the coordinator host: install etcd (Debian: etcd-server and etcd-client) or set "
           "[scratch] etcd to the etcd binary")


def scratch_binaries(config: CoordinatorConfig) -> EtcdBinaries:
    """The etcd server and restore tool for a scratch member here; ToolError naming what is missing."""
    s = config.scratch
    etcd = s.etcd if s.etcd is not None else (Path(found) if (found := shutil.which("etcd")) else None)
    if etcd is None:
        raise ToolError(NO_ETCD)
    if not etcd.is_file():
        raise ToolError(f"[scratch] etcd {etcd} does not exist")
    search = str(etcd.parent) if s.tool is None else None
    tool = find_tool(s.tool, search) if search is None else _tool_beside(etcd)
    return EtcdBinaries(etcd=etcd, tool=tool)


def _tool_beside(etcd: Path) -> SnapshotTool:
    """The restore tool next to the etcd binary (same release), else the one on PATH."""
    try:
        return find_tool(None, str(etcd.parent))
    except ToolError:
        return find_tool(None)


def scratch_dir(config: CoordinatorConfig) -> Path:
    """Where scratch members' data lives (removed after each use)."""
    return config.scratch.dir or config.coordinator.state_dir / "scratch"
