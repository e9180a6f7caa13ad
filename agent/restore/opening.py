"""What a restore on this node starts from: the snapshot proven restorable, and every parameter filled in.

Nothing is read from a snapshot before it is proven (trailer, bbolt pages,
`snapshot status`) and, when a catalog record sits beside it, proven to be
the file that record describes. The parameters record absolute paths and the
exact restore command, so a resume restores the same file from anywhere.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.restore.swap import restore_target, wal_target
from etcdguard.common.base.errors import EtcdguardError, ToolError, UnsafeRefusal, UsageError
from etcdguard.common.etcd.client import EtcdClient, EtcdStatus
from etcdguard.common.journal import new_op_id
from etcdguard.common.ops.bump import bump_for
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.snapshot.bbolt import HEAD_BYTES, meta_problem
from etcdguard.common.snapshot.integrity import (
    Recorded,
    SnapshotCheck,
    read_sidecar,
    sidecar_problems,
    verify_restorable,
)
from etcdguard.common.snapshot.tools import SnapshotTool, restore_argv


def catalog_record(snapshot: Path) -> Optional[Recorded]:
    """The sidecar beside a snapshot file (the catalog's, or a staged upload's), None if there is none.

    An unreadable sidecar is a refusal, not "no sidecar": it may be what
    stands between a replaced file and a restore.
    """
    try:
        return read_sidecar(snapshot)
    except ValueError as exc:
        raise UnsafeRefusal(f"the snapshot's record is unreadable: {exc}; nothing was changed. "
                            "Move it aside if the snapshot is known to be right") from None


def live_status(config: AgentConfig, member: LocalMember) -> Optional[EtcdStatus]:
    try:
        with EtcdClient(member.endpoint, member.tls, config.etcd.dial_timeout) as c:
            return c.status()
    except EtcdguardError:
        return None


def inspect_snapshot(snapshot: Path, tool: SnapshotTool, recorded: Optional[Recorded] = None,
                     expect_sha256: Optional[str] = None) -> SnapshotCheck:
    """Prove ``snapshot`` restorable (trailer, bbolt, `snapshot status`) and, when it is in a
    catalog, that it is the file the catalog recorded; with ``expect_sha256`` (the vault's), that
    it is that snapshot. Nothing else is read before this."""
    check = verify_restorable(snapshot, tool=tool)
    if recorded is not None:
        problems = sidecar_problems(recorded, check.digest, check.revision)
        if problems:
            raise UnsafeRefusal(
                f"{snapshot} is not the snapshot its catalog record {recorded.where} describes: "
                f"{'; '.join(problems)}. The file was replaced or damaged after it was taken; "
                "nothing was changed. Restore another snapshot, or move the record aside if this "
                "file is known to be right")
    if expect_sha256 is not None and check.digest.sha256 != expect_sha256:
        raise UnsafeRefusal(f"{snapshot} has sha256 {check.digest.sha256[:16]}..., not the planned snapshot "
                            f"{expect_sha256[:16]}...; nothing was changed")
    return check


@dataclass(frozen=True)
class VerifiedCopy:
    """A file already proven to be this snapshot (a staged copy verified on arrival and unchanged since)."""

    sha256: str
    size: int
    revision: int


def _proven(snapshot: Path, tool: SnapshotTool, recorded: Optional[Recorded], expect_sha256: Optional[str],
            verified: Optional[VerifiedCopy]) -> tuple[str, int, int]:
    """(sha256, size, revision) of a snapshot proven restorable: in full, or for a verified copy its
    recorded facts once the cheap checks (bbolt's meta pages) pass."""
    if verified is not None:
        with open(snapshot, "rb") as fh:
            problem = meta_problem(fh.read(HEAD_BYTES))
        if problem is not None:
            raise UnsafeRefusal(f"{snapshot}: not an etcd snapshot ({problem}); nothing was changed")
        return verified.sha256, verified.size, verified.revision
    check = inspect_snapshot(snapshot, tool, recorded, expect_sha256)
    if check.revision is None:
        raise ToolError(f"{tool.kind} did not report the revision of {snapshot}")
    return check.digest.sha256, check.digest.size, check.revision


def make_params(config: AgentConfig, member: LocalMember, tool: SnapshotTool, snapshot: Path,
                op: Optional[str] = None, *, initial_cluster: Optional[str] = None, token: Optional[str] = None,
                peer_url: Optional[str] = None, bump_revision: Optional[int] = None, exact_bump: bool = False,
                recorded: Optional[Recorded] = None, expect_sha256: Optional[str] = None,
                verified: Optional[VerifiedCopy] = None) -> RestoreParams:
    """Read the snapshot (verify + revision) and fill in every parameter of the restore.

    The bump is raised past this member's live revision unless ``exact_bump`` (a
    cluster restore, where every member must bump by the same planned amount).
    """
    op = op or new_op_id()
    peer = peer_url or member.peer_url
    if not peer:
        raise UsageError("this member's peer URL is unknown: set etcd.peer_url in the agent config")
    snapshot = snapshot.resolve()
    sha256, size, revision = _proven(snapshot, tool, recorded, expect_sha256, verified)
    live = live_status(config, member)
    configured = config.restore.bump_revision if bump_revision is None else bump_revision
    if not tool.supports_bump:
        bump = 0
    elif exact_bump:
        bump = configured
    else:
        bump = bump_for(configured, revision, live.revision if live is not None else None)
    cluster = initial_cluster or f"{member.name}={peer}"
    tok = token or f"etcdguard-{op}"
    data_dir = Path(os.path.abspath(member.data_dir))
    absolute_tool = dataclasses.replace(tool, path=Path(os.path.abspath(tool.path)))
    wal_dir = Path(os.path.abspath(member.wal_dir)) if member.wal_dir else None
    argv = restore_argv(absolute_tool, snapshot, restore_target(data_dir, op), name=member.name,
                        initial_cluster=cluster, token=tok, peer_url=peer, bump_revision=bump,
                        wal_dir=wal_target(wal_dir, op) if wal_dir is not None else None)
    live_id = f"{live.cluster_id:x}" if live is not None else ""
    return RestoreParams(
        op=op, snapshot=str(snapshot), snapshot_sha256=sha256, snapshot_size=size,
        snapshot_revision=revision, name=member.name, peer_url=peer, initial_cluster=cluster,
        token=tok, data_dir=str(data_dir), bump_revision=bump, restore_argv=tuple(argv),
        live_cluster_id=live_id, wal_dir=str(wal_dir) if wal_dir is not None else "",
    )
