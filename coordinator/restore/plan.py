"""The cluster restore plan: pure, plain serializable data, built from the cluster view.

``build_plan`` takes what the agents report (typed MemberViews), the
configured member list, the chosen vault snapshot and the options, and
returns every decision a restore makes before it touches anything: the one
fresh token, the one revision bump, each member's name, peer URL and data
dir, the full initial cluster, what each phase does on each node, and every
reason to refuse. ``etcdguardctl restore --plan`` prints it; ``--yes`` runs
it; ``--yes --plan-id ID`` runs it only while the plan is still the one the
operator reviewed (the id is a digest of the decisions, not of the moment).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops.bump import bump_for
from etcdguard.common.ops.cluster_plan import OVERRIDES, PlannedMember, PlannedPhase, Refusal, RestorePlan, SnapshotRef
from etcdguard.common.ops.flows import CLUSTER_RESTORE, FLOWS
from etcdguard.common.wire.typed import to_json
from etcdguard.coordinator.agents.quorum import QuorumState, cluster_quorum
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings
from etcdguard.coordinator.restore.lineage import Link, component
from etcdguard.coordinator.restore.refusals import PlanFacts, peer_url, refusals

KIND_RESTORE = "restore"
KIND_FORWARD_ROLLBACK = "rollback-forward"


@dataclass(frozen=True)
class PlanOptions:
    force: bool = False
    bump_revision: int = 1_000_000_000      # configured; raised past the live revision when needed
    safety_snapshot: bool = True
    start_timeout: float = 120.0
    fence_settle: float = 0.5
    kind: str = KIND_RESTORE
    rollback_of: Optional[str] = None
    overrides: tuple[str, ...] = ()          # the named overrides given (--allow-...); --force gives every one
    bump_at_least: int = 0                   # a warm standby copy's bump: a larger bump is as safe

    @property
    def granted(self) -> tuple[str, ...]:
        return OVERRIDES if self.force else tuple(o for o in OVERRIDES if o in self.overrides)


# ---------------------------------------------------------------------------
# building


def plan_digest(snapshot: SnapshotRef, members: Sequence[PlannedMember], *, bump: int, overrides: Sequence[str],
                live_cluster_id: Optional[str], refusals: Sequence[Refusal], kind: str) -> str:
    """What the operator reviewed, as 12 hex digits: the same decisions give the same id."""
    canonical = json.dumps({"snapshot": snapshot.id, "members": to_json(list(members)), "bump": bump,
                            "overrides": sorted(overrides), "live_cluster_id": live_cluster_id, "kind": kind,
                            "refusals": sorted(f"{r.check}:{r.member}:{r.message}" for r in refusals)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def planned_members(views: Sequence[MemberView], configured: Sequence[MemberSettings]) -> list[PlannedMember]:
    """Each configured member as its agent reports it (what is unknown stays empty)."""
    by_name = {v.name: v for v in views}
    members = []
    for m in configured:
        v = by_name.get(m.name)
        r = v.report if v is not None else None
        tool = r.restore_tool if r is not None else None
        members.append(PlannedMember(
            member=m.name, agent=m.agent, peer_url=(peer_url(v) if v is not None else None) or "",
            data_dir=r.member.data_dir if r else "", wal_dir=r.member.wal_dir if r else None,
            runtime=r.member.runtime if r else None, apiserver=r.member.apiserver if r else None,
            restart=r.member.restart if r else (), tool=f"{tool.kind} {tool.version}" if tool else "",
            quota_backend_bytes=r.member.quota_backend_bytes if r else None))
    return members


def choose_bump(views: Sequence[MemberView], configured: int, snapshot_revision: int,
                live_revision: Optional[int], at_least: int = 0) -> tuple[int, Optional[str]]:
    """(the one revision bump every member uses, a warning when there can be none).

    ``at_least``: the bump a warm standby copy was restored with; any bump at or above the one needed is
    as safe, so the plan takes it and the copy can be adopted."""
    if configured <= 0:
        return 0, None
    needed = max(bump_for(configured, snapshot_revision, live_revision), at_least)
    reports = [v.report for v in views if v.report is not None]
    if len(reports) < len(views):
        return needed, None   # refused anyway: an agent is away
    if all(r.restore_tool is not None and r.restore_tool.supports_bump for r in reports):
        return needed, None
    return 0, ("no revision bump: not every member's restore tool supports --bump-revision (etcd >= 3.5.10 "
               "etcdutl). Kubernetes watch caches may see revisions go backwards; the restart-controllers phase "
               "and a kubelet restart are the remedy")


def build_plan(views: Sequence[MemberView], configured: Sequence[MemberSettings], snapshot: SnapshotRef,
               options: PlanOptions, *, op: str, created_at: str = "", vault_problem: Optional[str] = None,
               open_operations: Sequence[str] = (), lineage: Sequence[Link] = (),
               known_operations: Sequence[str] = ()) -> RestorePlan:
    """Every decision of a cluster restore, from the cluster view; no side effects.

    ``lineage``: the (before, after) cluster ids of the restores this coordinator recorded."""
    healthy = [v for v in views if v.healthy]
    quorum = cluster_quorum(views)
    ids = sorted({v.etcd.cluster_id for v in healthy if v.etcd.cluster_id})
    live_cluster_id = ids[0] if len(ids) == 1 else None
    ours = component(lineage, live_cluster_id) if live_cluster_id else frozenset()
    found = refusals(PlanFacts(views, configured, snapshot, vault_problem, open_operations, ours,
                               frozenset(known_operations)))
    members = planned_members(views, configured)
    warnings: list[str] = []
    revisions = [v.etcd.revision for v in views if v.reachable and v.etcd.revision is not None]
    live_revision = max(revisions) if revisions else None
    bump, bump_warning = choose_bump(views, options.bump_revision, snapshot.revision, live_revision,
                                     options.bump_at_least)
    if bump_warning:
        warnings.append(bump_warning)
    if len(members) == 2:
        warnings.append("a cluster of 2 members tolerates no failure: losing either member stops it. Get back to "
                        "3 after the restore: add a member on a third host (`etcdctl member add`, then an agent "
                        "there and this coordinator's [[members]]), or restore onto 3 members")
    safety = options.safety_snapshot and bool(healthy)
    if options.safety_snapshot and not healthy:
        warnings.append("no member has quorum: no pre-restore safety snapshot can be taken")
    discarded = max(0, live_revision - snapshot.revision) if live_revision is not None else None
    granted = tuple(o for o in options.granted if any(r.override == o for r in found))
    plan_id = plan_digest(snapshot, members, bump=bump, overrides=granted, live_cluster_id=live_cluster_id,
                          refusals=found, kind=options.kind)
    base = RestorePlan(
        plan_id=plan_id, op=op, kind=options.kind, snapshot=snapshot, members=tuple(members),
        initial_cluster=",".join(f"{m.member}={m.peer_url}" for m in members), token=f"etcdguard-{op}",
        bump_revision=bump, expected_min_revision=snapshot.revision + bump, live_revision=live_revision,
        live_cluster_id=live_cluster_id, discarded_revisions=discarded, safety_snapshot=safety, phases=(),
        refusals=tuple(found), warnings=tuple(warnings), force=options.force, rollback_of=options.rollback_of,
        created_at=created_at, start_timeout=options.start_timeout, fence_settle=options.fence_settle,
        cluster_down=not healthy or quorum.state is QuorumState.LOST, overrides=granted, quorum=quorum.sentence)
    return with_phases(base)


def with_phases(p: RestorePlan) -> RestorePlan:
    """The plan with every step's words for it (after a change of the plan's decisions)."""
    flow = FLOWS.get(p.flow, CLUSTER_RESTORE)
    return replace(p, phases=describe_phases(p), downtime_phases=flow.downtime)


def describe_phases(p: RestorePlan) -> tuple[PlannedPhase, ...]:
    """What each step does on each node, in words an operator checks before saying yes (the steps' own)."""
    return tuple(step.describe(p) for step in FLOWS.get(p.flow, CLUSTER_RESTORE).steps)


def render_plan(p: RestorePlan, run_with: Optional[str] = None) -> str:
    """The plan for a terminal; ``run_with``: the command that runs it (default: this snapshot's, by plan id)."""
    snap = p.restored
    title = ("cluster restore" if p.kind == KIND_RESTORE
             else f"rollback of {p.rollback_of}: a new, forward restore of its pre-restore snapshot")
    lines = [f"{title}, plan {p.plan_id} (operation {p.op})",
             f"  snapshot {snap.id[:12]}: revision {snap.revision:,}, {format_bytes(snap.size)}, taken "
             f"{snap.created_at} on {snap.member}" + (f", etcd {snap.etcd_version}" if snap.etcd_version
                                                             else "")]
    if p.quorum:
        lines.append(f"  {p.quorum}" + ("; no safety snapshot can be taken and every phase is downtime"
                                         if p.cluster_down else ""))
    if p.live_revision is not None:
        lost = f"{p.discarded_revisions:,}" if p.discarded_revisions is not None else "?"
        lines.append(f"  live cluster: revision {p.live_revision:,}"
                     + (f", cluster id {p.live_cluster_id}" if p.live_cluster_id else "")
                     + f"; restoring discards {lost} revision(s) of writes made after the snapshot")
    else:
        lines.append("  live cluster: does not answer")
    lines.append(f"  initial cluster {p.initial_cluster}")
    lines.append(f"  token {p.token}; " + (f"revision bump {p.bump_revision:,}" if p.bump_revision
                                           else "no revision bump"))
    lines.append("  members:")
    for m in p.members:
        lines.append(f"    {m.member:<12} agent {m.agent}  data {m.data_dir or '?'}"
                     + (f"  wal {m.wal_dir}" if m.wal_dir else "") + f"  ({m.runtime or '?'}, {m.tool or 'no tool'})")
    lines.append("  phases (! = downtime, from fence to unfence):")
    for i, phase in enumerate(p.phases, 1):
        mark = "!" if phase.destructive else " "
        lines.append(f"   {mark}{i:>2}. {phase.phase:<19} {phase.what}")
        for member, what in phase.members:
            lines.append(f"         {member}: {what}")
        lines.append(f"         on failure: {phase.on_failure}")
    for w in p.warnings:
        lines.append(f"  warning: {w}")
    lines += _render_refusals(p)
    flags = "".join(f" --{o}" for o in p.overrides)
    command = run_with or f"etcdguardctl restore {snap.id[:12]} --yes --plan-id {p.plan_id}"
    lines.append("  nothing has been changed" + ("" if p.blocking else f"; run it with: {command}{flags}"))
    return "\n".join(lines)


def _render_refusals(p: RestorePlan) -> list[str]:
    if not p.refusals:
        return ["  preflight: no reason to refuse"]
    lines = ["  REFUSED:" if p.blocking else "  accepted by the operator's overrides:"]
    for r in p.refusals:
        where = f"{r.member}: " if r.member else ""
        accepted = ""
        if p.overridden(r):
            accepted = f" (accepted: --{r.override})" if r.override else " (accepted: --force)"
        lines.append(f"    - {where}{r.message}{accepted}")
    if p.overrides:
        lines.append("  overrides given: " + " ".join(f"--{o}" for o in p.overrides)
                     + (" (what --force stands for here)" if p.force else ""))
    return lines
