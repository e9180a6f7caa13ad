"""Who the snapshot and this node's cluster are, for the refusals of a node-local restore.

The decisions are pure (safety.py); this module gathers their facts: etcd's
member list (or, when etcd does not answer, the members recorded in the
data dir's database), the snapshot's sidecar and the members in the file,
and the cluster ids this node served before and after its recorded restores.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.restore.records import OperationStore, params_of
from etcdguard.agent.restore.safety import ClusterFacts, compare_identity, multi_member_refusal
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.snapshot.bbolt import BoltError, BoltMember, cluster_id_of, read_file_members
from etcdguard.common.snapshot.integrity import TRAILER_SIZE, Recorded


@dataclass(frozen=True)
class LocalChecks:
    """What a node-local restore checked before it starts; any refusal stops it (exit 3)."""

    identity: str                 # safety.Identity value
    checks: list[str]
    refusals: list[str]
    forced: list[str]             # refusals overridden by --force, recorded in the operation

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _db_members(path: Path, size: int) -> list[BoltMember]:
    """The members bucket of a bbolt file ([] if it cannot be read: this is evidence, not a gate)."""
    if size <= 0:
        return []
    try:
        return read_file_members(path, size)
    except (OSError, BoltError):
        return []


def _labels(members: list[tuple[int, str]]) -> tuple[str, ...]:
    """One label per member: its name, or its id while it has never started (and so has no name)."""
    return tuple(sorted(name or f"unstarted member {mid:x}" for mid, name in members))


def live_cluster(config: AgentConfig, member: LocalMember) -> Optional[ClusterFacts]:
    """The cluster this member serves: etcd's answer, else the members in its data dir's db."""
    try:
        with EtcdClient(member.endpoint, member.tls, config.etcd.dial_timeout) as c:
            st = c.status()
            members = c.members()
        return ClusterFacts((f"{st.cluster_id:x}",), tuple(f"{m.id:x}" for m in members),
                            _labels([(m.id, m.name) for m in members]), "etcd's member list")
    except EtcdguardError:
        pass
    db = Path(member.data_dir) / "member" / "snap" / "db"
    found = _db_members(db, db.stat().st_size if db.is_file() else 0)
    if not found:
        return None
    return ClusterFacts((f"{cluster_id_of([m.id for m in found]):x}",), tuple(m.id_hex for m in found),
                        _labels([(m.id, m.name) for m in found]),
                        f"the members recorded in {db} (etcd did not answer)")


def snapshot_cluster(snapshot: Path, recorded: Optional[Recorded]) -> Optional[ClusterFacts]:
    """Who the snapshot is from: its sidecar's cluster and member, and the members in the file."""
    size = snapshot.stat().st_size - TRAILER_SIZE if snapshot.is_file() else 0
    found = _db_members(snapshot, size)
    cids: list[str] = []
    mids = [m.id_hex for m in found]
    names = sorted(m.name for m in found if m.name)
    where = []
    if recorded is not None and recorded.cluster_id not in ("", "0"):
        cids.append(recorded.cluster_id)
        if recorded.member_id and recorded.member_id not in mids:
            mids.append(recorded.member_id)
        if recorded.member and recorded.member not in names:
            names.append(recorded.member)
        where.append("its catalog record")
    if found:
        computed = f"{cluster_id_of([m.id for m in found]):x}"
        if computed not in cids:
            cids.append(computed)
        where.append("the members recorded in the file")
    if not cids and not mids:
        return None
    return ClusterFacts(tuple(cids), tuple(mids), tuple(names), " and ".join(where))


def lineage(ops: OperationStore) -> dict[str, str]:
    """Cluster ids this node served before or after one of its recorded restores -> that operation."""
    out: dict[str, str] = {}
    for other in ops.all():
        with contextlib.suppress(EtcdguardError, OSError, ValueError, KeyError, TypeError, AttributeError):
            rec = other.log().record
            before = params_of(rec).live_cluster_id
            if before:
                out.setdefault(before, other.op)
            verified = rec.step_done("verify")
            if verified is not None and isinstance(verified.result, dict) and verified.result.get("cluster_id"):
                out.setdefault(str(verified.result["cluster_id"]), other.op)
    return out


def local_checks(config: AgentConfig, member: LocalMember, ops: OperationStore, params: RestoreParams, *,
                 recorded: Optional[Recorded] = None, force: bool = False) -> LocalChecks:
    """The refusals of a node-local restore: another cluster's snapshot (unless ``force``)
    and a multi-member cluster (never forced: it needs the coordinator)."""
    live = live_cluster(config, member)
    snap = snapshot_cluster(Path(params.snapshot), recorded)
    checks: list[str] = []
    refusals: list[str] = []
    forced: list[str] = []
    split = multi_member_refusal(member.name, live.member_names if live is not None else None,
                                 member.initial_cluster)
    if split is not None:
        refusals.append(split)
    else:
        checks.append(f"single-member cluster ({live.describe() if live is not None else 'etcd did not answer'})")
    verdict = compare_identity(snap, live, lineage(ops))
    if verdict.refuses and force:
        forced.append(verdict.sentence)
        checks.append(f"FORCED (--force): {verdict.sentence}")
    elif verdict.refuses:
        refusals.append(verdict.sentence)
    else:
        checks.append(verdict.sentence)
    return LocalChecks(verdict.outcome.value, checks, refusals, forced)
