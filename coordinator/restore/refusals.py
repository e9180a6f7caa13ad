"""Every reason a cluster restore plan refuses, as a list of named checks (Barman's `check` style).

Each check is a pure function of ``PlanFacts`` (the agents' reports, the
configured members, the snapshot, the vault's verdict on its copy, the open
operations) that returns the refusals it finds, each naming its check and
its member; ``refusals`` runs all of them, so the operator sees every reason
at once. A refusal that names an override (``--allow-other-cluster``, ...) is one
the operator may accept; ``--force`` is an alias for every such override, and
the plan spells out which ones it granted.

A snapshot of this cluster's *lineage* is not "another cluster": every restore
gives the cluster a new id, so the coordinator records which cluster ids each
restore produced from which (lineage.py), and a snapshot whose cluster is
connected to the live one through those records restores without an override.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops.cluster_plan import (
    ALLOW_MIXED_CLUSTER_IDS,
    ALLOW_OTHER_CLUSTER,
    ALLOW_VERSION_MISMATCH,
    Refusal,
    SnapshotRef,
)
from etcdguard.common.ops.space import restore_space
from etcdguard.common.wire.report import AgentReport
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings
from etcdguard.coordinator.members.drift import drift

DEFAULT_QUOTA = 2 * 1024**3        # etcd's --quota-backend-bytes default
QUOTA_MARGIN = 0.9                 # a snapshot above 90% of the quota would start with NOSPACE close


@dataclass(frozen=True)
class PlanFacts:
    views: Sequence[MemberView]
    configured: Sequence[MemberSettings]
    snapshot: SnapshotRef
    vault_problem: Optional[str] = None
    open_operations: Sequence[str] = ()
    lineage: frozenset[str] = frozenset()      # cluster ids of this cluster before and after its restores
    known_operations: frozenset[str] = frozenset()   # the operations this coordinator has a journal of

    def reporting(self) -> Iterator[tuple[MemberView, AgentReport]]:
        """Members whose agent answered with a report."""
        for v in self.views:
            if v.reachable and v.report is not None:
                yield v, v.report


Check = Callable[[PlanFacts], Iterator[Refusal]]


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2]) if version else ""


def peer_url(view: MemberView) -> Optional[str]:
    """The member's own peer URL: from its configuration, else from etcd's member list."""
    if view.report is None:
        return None
    if view.report.member.peer_url:
        return view.report.member.peer_url
    for m in view.etcd.members:
        if m.name == view.name and m.peer_urls:
            return m.peer_urls[0]
    return None


def vault_copy(f: PlanFacts) -> Iterator[Refusal]:
    if f.vault_problem:
        yield Refusal("snapshot", f"the vault copy of {f.snapshot.id[:12]} does not verify: {f.vault_problem}")


def open_operations(f: PlanFacts) -> Iterator[Refusal]:
    for op in f.open_operations:
        yield Refusal("operation", f"restore operation {op} is not finished; resume it, roll it back or wait for "
                                   "it (etcdguardctl restores)")


def agents_reachable(f: PlanFacts) -> Iterator[Refusal]:
    for v in f.views:
        if not v.reachable or v.report is None:
            yield Refusal("agent", f"the agent at {v.agent} is unreachable or refused this coordinator: "
                                   f"{v.error or 'no report'}", v.name)


def agent_serves_member(f: PlanFacts) -> Iterator[Refusal]:
    for v, r in f.reporting():
        if r.member.name != v.name:
            yield Refusal("member", f"the agent at {v.agent} serves etcd member {r.member.name!r}, not {v.name!r}; "
                                    "fix [[members]] in the coordinator's config", v.name)
        if peer_url(v) is None:
            yield Refusal("member", "this member's peer URL is unknown; set etcd.peer_url in its agent config",
                          v.name)


def restore_tool(f: PlanFacts) -> Iterator[Refusal]:
    for v, r in f.reporting():
        if r.restore_tool is None:
            yield Refusal("tool", "no etcdutl or etcdctl on this node; install etcd's client tools or set "
                                  "etcd.restore_tool", v.name)


def node_operation(f: PlanFacts) -> Iterator[Refusal]:
    for v, r in f.reporting():
        known = [op for op in r.restore.open_ops if op in f.known_operations]
        orphaned = [op for op in r.restore.open_ops if op not in f.known_operations]
        if known or (r.restore.locked and not orphaned):
            which = ", ".join(known) or "a restore step holds the lock"
            yield Refusal("operation", f"a restore operation is open on this node ({which}); finish or roll it "
                                       "back first", v.name)
        for op in orphaned:
            yield Refusal("operation", f"restore operation {op} is open on this node, and this coordinator has no "
                                       "journal of it (an earlier coordinator ran it, or lost its state): end it on "
                                       f"every member with `etcdguardctl restore --rollback {op}`", v.name)


def disk_space(f: PlanFacts) -> Iterator[Refusal]:
    """The restored database, the WAL etcd preallocates and a margin, beside the live data (space.py);
    the snapshot itself in the staging area."""
    for v, r in f.reporting():
        need = restore_space(f.snapshot.size, bool(r.member.wal_dir))
        if r.disk.data_dir_free is not None and r.disk.data_dir_free < need.data_dir:
            yield Refusal("disk", f"{format_bytes(r.disk.data_dir_free)} free on the data dir's filesystem; the "
                                  f"restore needs {format_bytes(need.data_dir)} (the database, the WAL etcd "
                                  "preallocates and a margin)", v.name)
        if r.disk.staging_free is not None and r.disk.staging_free < f.snapshot.size:
            yield Refusal("disk", f"{format_bytes(r.disk.staging_free)} free on the staging dir's filesystem; "
                                  f"the snapshot needs {format_bytes(f.snapshot.size)}", v.name)
        if need.wal_dir and r.disk.wal_dir_free is not None and r.disk.wal_dir_free < need.wal_dir:
            yield Refusal("disk", f"{format_bytes(r.disk.wal_dir_free)} free for the WAL dir {r.member.wal_dir}; "
                                  f"need {format_bytes(need.wal_dir)}", v.name)


def backend_quota(f: PlanFacts) -> Iterator[Refusal]:
    for v, r in f.reporting():
        quota = r.member.quota_backend_bytes or DEFAULT_QUOTA
        if f.snapshot.size > quota * QUOTA_MARGIN:
            yield Refusal("quota", f"the snapshot ({format_bytes(f.snapshot.size)}) is above 90% of this member's "
                                   f"--quota-backend-bytes ({format_bytes(quota)}); etcd would soon raise NOSPACE. "
                                   "Raise the quota first", v.name)


def minor_step(snapshot: str, member: str) -> Optional[int]:
    """Pure: how many minor versions the member runs ahead of the snapshot's etcd (negative: behind);
    None when either is unknown or the majors differ."""
    try:
        s_major, s_minor = (int(x) for x in snapshot.split(".")[:2])
        m_major, m_minor = (int(x) for x in member.split(".")[:2])
    except ValueError:
        return None
    return m_minor - s_minor if s_major == m_major else None


def etcd_version(f: PlanFacts) -> Iterator[Refusal]:
    """The member's etcd (not its restore tool's, which may differ) must run the snapshot's minor version or
    the next one (3.5 -> 3.6 is etcd's upgrade path, and what a Kubernetes upgrade does); an older etcd than
    the snapshot's, or a jump of more than one minor, needs the override."""
    if not f.snapshot.etcd_version:
        return
    for v, r in f.reporting():
        runs = v.etcd.version or (r.restore_tool.version if r.restore_tool else "")
        if not runs:
            continue
        step = minor_step(f.snapshot.etcd_version, runs)
        if step in (0, 1):
            continue
        why = ("an older etcd than the one that wrote it" if step is not None and step < 0
               else "more than one minor version apart")
        yield Refusal("version", f"the snapshot was taken from etcd {f.snapshot.etcd_version}; this member runs "
                                 f"{runs} ({why}). --{ALLOW_VERSION_MISMATCH} restores it anyway", v.name,
                      forcible=True, override=ALLOW_VERSION_MISMATCH)


def member_list(f: PlanFacts) -> Iterator[Refusal]:
    names = sorted(m.name for m in f.configured)
    peers = {v.name: peer_url(v) for v in f.views}
    for v, _ in f.reporting():
        if not v.healthy:
            continue
        listed = sorted(m.name or f"an unstarted member {m.id}" for m in v.etcd.members)
        if listed and listed != names:
            fixes = "; ".join(d.sentence() for d in drift(names, v.etcd.members, peers))
            yield Refusal("members", f"etcd's member list is {', '.join(listed)}, the configuration names "
                                     f"{', '.join(names)}; make them agree" + (f": {fixes}" if fixes else ""), v.name)
        learners = sorted(m.name or m.id for m in v.etcd.members if m.is_learner)
        if learners:
            yield Refusal("members", f"the member list holds learner(s) {', '.join(learners)}; promote or remove "
                                     "them first (a restore rebuilds voters only)", v.name)


def cluster_identity(f: PlanFacts) -> Iterator[Refusal]:
    live_ids = sorted({v.etcd.cluster_id for v in f.views if v.healthy and v.etcd.cluster_id})
    if len(live_ids) > 1:
        yield Refusal("members", f"the members report different cluster ids ({', '.join(live_ids)}); are they one "
                                 f"cluster? --{ALLOW_MIXED_CLUSTER_IDS} restores them into one anyway",
                      forcible=True, override=ALLOW_MIXED_CLUSTER_IDS)
    snap = f.snapshot.cluster_id
    if len(live_ids) == 1 and snap and snap != live_ids[0] and snap not in f.lineage:
        yield Refusal("cluster", f"the snapshot comes from cluster {snap}, the live cluster is {live_ids[0]}, and no "
                                 "restore recorded by this coordinator connects the two. "
                                 f"--{ALLOW_OTHER_CLUSTER} restores it anyway (e.g. moving a cluster to new "
                                 "hardware)", forcible=True, override=ALLOW_OTHER_CLUSTER)


CHECKS: tuple[Check, ...] = (vault_copy, open_operations, agents_reachable, agent_serves_member, restore_tool,
                             node_operation, disk_space, backend_quota, etcd_version, member_list, cluster_identity)


def refusals(facts: PlanFacts, checks: Sequence[Check] = CHECKS) -> list[Refusal]:
    """Every check's refusals, each (check, message, member) once."""
    seen: set[tuple[str, str, Optional[str]]] = set()
    out = []
    for check in checks:
        for r in check(facts):
            key = (r.check, r.message, r.member)
            if key not in seen:
                seen.add(key)
                out.append(r)
    return out
