"""Warm standby: the newest snapshot already restored into a prepared data dir, ahead of any restore.

With ``[restore] warm_standby`` on the coordinator, each agent keeps the
vault's newest snapshot restored for its member (the full initial cluster,
one token the coordinator chose for it, one revision bump) beside the live
data, on the data dir's filesystem: ``<data_dir>/.etcdguard-warm/<token>/``
(and ``<wal_dir>/.etcdguard-warm/<token>/`` for a separate WAL dir), with a
``warm.json`` saying exactly what it is. A restore of that snapshot with
those parameters then prepares by renaming it into the operation's
workspace instead of running the restore tool: seconds saved while the
cluster may be down. The cost is one more copy of the database per member.

Nothing here touches the live data; only the newest warm copy is kept, and a
copy whose parameters or snapshot no longer match is never used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.restore import swap, toolproc
from etcdguard.agent.restore.ownership import copy_ownership_and_sync
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import ToolError
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.snapshot.tools import SnapshotTool, failure_reason, restore_argv

log = logging.getLogger(__name__)

WARM = ".etcdguard-warm"
RECORD = "warm.json"
TIMEOUT = 3600.0


@dataclass(frozen=True)
class WarmParams:
    """What a warm copy was restored with: a restore with the same may adopt it."""

    sha256: str
    name: str
    initial_cluster: str
    token: str
    peer_url: str
    bump_revision: int
    wal: bool

    @classmethod
    def of(cls, p: RestoreParams) -> WarmParams:
        return cls(p.snapshot_sha256, p.name, p.initial_cluster, p.token, p.peer_url, p.bump_revision,
                   bool(p.wal_dir))


def warm_root(data_dir: Path) -> Path:
    return data_dir / WARM


def _wal_root(wal_dir: Path) -> Path:
    return wal_dir / WARM


def read_record(directory: Path) -> Optional[WarmParams]:
    try:
        data = json.loads((directory / RECORD).read_text())
        return WarmParams(**{k: data[k] for k in WarmParams.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def listing(data_dir: Path) -> list[dict[str, Any]]:
    """The warm copies this member holds (for the coordinator's plan and status)."""
    root = warm_root(data_dir)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            rec = read_record(d)
            if rec is not None and (d / "data" / "member" / "snap" / "db").is_file():
                out.append(asdict(rec))
    return out


def prepare_warm(p: RestoreParams, tool: SnapshotTool) -> dict[str, Any]:
    """Restore ``p``'s snapshot into the warm area (unless already there), then drop older warm copies."""
    data_dir = Path(p.data_dir)
    wanted = WarmParams.of(p)
    target = warm_root(data_dir) / p.token
    if read_record(target) == wanted and (target / "data" / "member" / "snap" / "db").is_file():
        return {"warm": str(target), "reused": True}
    shutil.rmtree(target, ignore_errors=True)
    fsutil.ensure_private_dir(warm_root(data_dir))
    fsutil.ensure_private_dir(target)
    wal_target = _wal_root(Path(p.wal_dir)) / p.token / "wal" if p.wal_dir else None
    if wal_target is not None:
        shutil.rmtree(wal_target.parent, ignore_errors=True)
        fsutil.ensure_private_dir(wal_target.parent.parent)
        fsutil.ensure_private_dir(wal_target.parent)
    argv = restore_argv(tool, Path(p.snapshot), target / "data", name=p.name, initial_cluster=p.initial_cluster,
                        token=p.token, peer_url=p.peer_url, bump_revision=p.bump_revision, wal_dir=wal_target)
    out = toolproc.run_tool(argv, tool.env(), TIMEOUT, target, low_priority=True)
    if out.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise ToolError(f"warm standby: {Path(argv[0]).name} snapshot restore failed (exit {out.returncode}): "
                        f"{failure_reason(out.stderr or out.stdout)}")
    reference = data_dir / "member" if (data_dir / "member").is_dir() else data_dir
    total = copy_ownership_and_sync(reference, target / "data" / "member")
    if wal_target is not None and p.wal_dir:
        total += copy_ownership_and_sync(Path(p.wal_dir), wal_target)
    fsutil.atomic_write_json(target / RECORD, asdict(wanted))
    _drop_others(data_dir, Path(p.wal_dir) if p.wal_dir else None, keep=p.token)
    log.info("warm standby: snapshot %s restored ahead into %s (%d bytes)", p.snapshot_sha256[:12], target, total)
    return {"warm": str(target), "reused": False, "bytes": total}


def _drop_others(data_dir: Path, wal_dir: Optional[Path], keep: str) -> None:
    for root in [warm_root(data_dir), *([_wal_root(wal_dir)] if wal_dir is not None else [])]:
        if root.is_dir():
            for d in root.iterdir():
                if d.name != keep:
                    shutil.rmtree(d, ignore_errors=True)


def adopt(p: RestoreParams) -> Optional[dict[str, Any]]:
    """When a warm copy was restored with exactly ``p``'s parameters: move it into the operation's workspace
    (a rename on the data dir's filesystem) and say so; else None (the restore tool runs as usual)."""
    data_dir = Path(p.data_dir)
    source = warm_root(data_dir) / p.token
    if read_record(source) != WarmParams.of(p) or not (source / "data" / "member" / "snap" / "db").is_file():
        return None
    target = swap.restore_target(data_dir, p.op)
    fsutil.ensure_private_dir(target.parent)
    if p.wal_dir and not (_wal_root(Path(p.wal_dir)) / p.token / "wal").is_dir():
        return None
    os.rename(source / "data", target)
    if p.wal_dir:
        fsutil.ensure_private_dir(swap.wal_workspace(Path(p.wal_dir), p.op))
        os.rename(_wal_root(Path(p.wal_dir)) / p.token / "wal", swap.wal_target(Path(p.wal_dir), p.op))
    shutil.rmtree(source, ignore_errors=True)
    fsutil.fsync_dir(data_dir)
    log.info("restore %s: prepared ahead (warm standby), adopted from %s", p.op, source)
    return {"prepared": str(swap.prepared_member(data_dir, p.op)), "warm": True}
