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
from dataclasses import dataclass, field
from typing import Any, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops import phases as ph
from etcdguard.common.ops.bump import bump_for
from etcdguard.common.wire.typed import from_json, renamed, to_json
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings

DEFAULT_QUOTA = 2 * 1024**3        # etcd's --quota-backend-bytes default
QUOTA_MARGIN = 0.9                 # a snapshot above 90% of the quota would start with NOSPACE close
WAL_SPACE = 128 * 1024**2          # a restore writes one preallocated 64 MiB WAL segment
KIND_RESTORE = "restore"
KIND_FORWARD_ROLLBACK = "rollback-forward"


@dataclass(frozen=True)
class SnapshotRef:
    """The vault snapshot a plan restores (everything the plan and the summary show of it)."""

    id: str                      # the sha256
    size: int
    revision: int
    member: str = field(metadata=renamed("source_member"))   # where it was taken (older journals: source_member)
    created_at: str
    created_unix: float
    etcd_version: str = ""
    cluster_id: str = ""


@dataclass(frozen=True)
class PlannedMember:
    member: str
    agent: str
    peer_url: str
    data_dir: str
    wal_dir: Optional[str] = None
    runtime: Optional[str] = None
    apiserver: Optional[str] = None
    restart: tuple[str, ...] = ()
    tool: str = ""


@dataclass(frozen=True)
class Refusal:
    """One reason not to go on. ``forcible``: ``--force`` accepts it (the operator knows better)."""

    check: str
    message: str
    member: Optional[str] = None
    forcible: bool = False


@dataclass(frozen=True)
class PlannedPhase:
    phase: str
    destructive: bool
    what: str
    on_failure: str
    members: tuple[tuple[str, str], ...] = ()     # (member, what happens there) where it differs per node


@dataclass(frozen=True)
class PlanOptions:
    force: bool = False
    bump_revision: int = 1_000_000_000      # configured; raised past the live revision when needed
    safety_snapshot: bool = True
    start_timeout: float = 120.0
    fence_settle: float = 0.5
    kind: str = KIND_RESTORE
    rollback_of: Optional[str] = None


@dataclass(frozen=True)
class RestorePlan:
    plan_id: str
    op: str
    kind: str
    snapshot: SnapshotRef
    members: tuple[PlannedMember, ...]
    initial_cluster: str
    token: str
    bump_revision: int
    expected_min_revision: int
    live_revision: Optional[int]
    live_cluster_id: Optional[str]
    discarded_revisions: Optional[int]
    safety_snapshot: bool
    phases: tuple[PlannedPhase, ...]
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()
    force: bool = False
    rollback_of: Optional[str] = None
    created_at: str = ""
    downtime_phases: tuple[str, ...] = (ph.FENCE, ph.STOP, ph.SWAP, ph.START, ph.VERIFY, ph.UNFENCE)
    start_timeout: float = 120.0
    fence_settle: float = 0.5

    @property
    def blocking(self) -> tuple[Refusal, ...]:
        """The refusals that stop this plan (forcible ones do not when it was made with --force)."""
        return tuple(r for r in self.refusals if not (r.forcible and self.force))

    def member(self, name: str) -> PlannedMember:
        for m in self.members:
            if m.member == name:
                return m
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        data["refused"] = bool(self.blocking)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RestorePlan:
        return from_json(cls, data, "plan")


# ---------------------------------------------------------------------------
# building


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2]) if version else ""


def _peer_url(view: MemberView) -> Optional[str]:
    """The member's own peer URL: from its configuration, else from etcd's member list."""
    if view.report is None:
        return None
    if view.report.member.peer_url:
        return view.report.member.peer_url
    for m in view.etcd.members:
        if m.name == view.name and m.peer_urls:
            return m.peer_urls[0]
    return None


def _refusals(views: Sequence[MemberView], configured: Sequence[MemberSettings], snapshot: SnapshotRef,
              vault_problem: Optional[str], open_operations: Sequence[str]) -> list[Refusal]:
    out: list[Refusal] = []
    names = [m.name for m in configured]
    if vault_problem:
        out.append(Refusal("snapshot", f"the vault copy of {snapshot.id[:12]} does not verify: {vault_problem}"))
    for op in open_operations:
        out.append(Refusal("operation", f"restore operation {op} is not finished; resume it, roll it back "
                                        "or wait for it (etcdguardctl restores)"))
    for v in views:
        if not v.reachable or v.report is None:
            out.append(Refusal("agent", f"the agent at {v.agent} is unreachable or refused this coordinator: "
                                        f"{v.error or 'no report'}", v.name))
            continue
        r = v.report
        if r.member.name != v.name:
            out.append(Refusal("member", f"the agent at {v.agent} serves etcd member {r.member.name!r}, not "
                                         f"{v.name!r}; fix [[members]] in the coordinator's config", v.name))
        if _peer_url(v) is None:
            out.append(Refusal("member", "this member's peer URL is unknown; set etcd.peer_url in its agent "
                                         "config", v.name))
        if r.restore_tool is None:
            out.append(Refusal("tool", "no etcdutl or etcdctl on this node; install etcd's client tools or set "
                                       "etcd.restore_tool", v.name))
        if r.restore.open_ops or r.restore.locked:
            which = ", ".join(r.restore.open_ops) or "a restore step holds the lock"
            out.append(Refusal("operation", f"a restore operation is open on this node ({which}); finish or "
                                            "roll it back first", v.name))
        need = 2 * snapshot.size
        for where, free in (("data dir", r.disk.data_dir_free), ("staging dir", r.disk.staging_free)):
            if free is not None and free < need:
                out.append(Refusal("disk", f"{format_bytes(free)} free on the {where}'s filesystem; the restore "
                                           f"needs {format_bytes(need)} (2x the snapshot)", v.name))
        if r.member.wal_dir and r.disk.wal_dir_free is not None and r.disk.wal_dir_free < WAL_SPACE:
            out.append(Refusal("disk", f"{format_bytes(r.disk.wal_dir_free)} free for the WAL dir "
                                       f"{r.member.wal_dir}; need {format_bytes(WAL_SPACE)}", v.name))
        quota = r.member.quota_backend_bytes or DEFAULT_QUOTA
        if snapshot.size > quota * QUOTA_MARGIN:
            out.append(Refusal("quota", f"the snapshot ({format_bytes(snapshot.size)}) is above 90% of this "
                                        f"member's --quota-backend-bytes ({format_bytes(quota)}); etcd would "
                                        "soon raise NOSPACE. Raise the quota first", v.name))
        runs = v.etcd.version or (r.restore_tool.version if r.restore_tool else "")
        if snapshot.etcd_version and runs and _major_minor(runs) != _major_minor(snapshot.etcd_version):
            out.append(Refusal("version", f"the snapshot was taken from etcd {snapshot.etcd_version}; this member "
                                          f"runs {runs}. --force restores it anyway", v.name, forcible=True))
        if v.healthy:
            listed = sorted(m.name for m in v.etcd.members)
            if listed and listed != sorted(names):
                out.append(Refusal("members", f"etcd's member list is {', '.join(listed)}, the configuration "
                                              f"names {', '.join(sorted(names))}; make them agree", v.name))
            learners = sorted(m.name or m.id for m in v.etcd.members if m.is_learner)
            if learners:
                out.append(Refusal("members", f"the member list holds learner(s) {', '.join(learners)}; promote "
                                              "or remove them first (a restore rebuilds voters only)", v.name))
    live_ids = sorted({v.etcd.cluster_id for v in views if v.healthy and v.etcd.cluster_id})
    if len(live_ids) > 1:
        out.append(Refusal("members", f"the members report different cluster ids ({', '.join(live_ids)}); "
                                      "are they one cluster? --force restores them into one anyway",
                           forcible=True))
    if len(live_ids) == 1 and snapshot.cluster_id and snapshot.cluster_id != live_ids[0]:
        out.append(Refusal("cluster", f"the snapshot comes from cluster {snapshot.cluster_id}, the live "
                                      f"cluster is {live_ids[0]}. --force restores it anyway (e.g. moving a "
                                      "cluster to new hardware)", forcible=True))
    # A refusal about a member repeats across members only once per (check, message).
    seen: set[tuple[str, str, Optional[str]]] = set()
    unique = []
    for r_ in out:
        key = (r_.check, r_.message, r_.member)
        if key not in seen:
            seen.add(key)
            unique.append(r_)
    return unique


def plan_digest(snapshot: SnapshotRef, members: Sequence[PlannedMember], *, bump: int, force: bool,
                live_cluster_id: Optional[str], refusals: Sequence[Refusal], kind: str) -> str:
    """What the operator reviewed, as 12 hex digits: the same decisions give the same id."""
    canonical = json.dumps({"snapshot": snapshot.id, "members": to_json(list(members)), "bump": bump,
                            "force": force, "live_cluster_id": live_cluster_id, "kind": kind,
                            "refusals": sorted(f"{r.check}:{r.member}:{r.message}" for r in refusals)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def build_plan(views: Sequence[MemberView], configured: Sequence[MemberSettings], snapshot: SnapshotRef,
               options: PlanOptions, *, op: str, created_at: str = "", vault_problem: Optional[str] = None,
               open_operations: Sequence[str] = ()) -> RestorePlan:
    """Every decision of a cluster restore, from the cluster view; no side effects."""
    by_name = {v.name: v for v in views}
    refusals = _refusals(views, configured, snapshot, vault_problem, open_operations)
    warnings: list[str] = []
    members: list[PlannedMember] = []
    for m in configured:
        v = by_name.get(m.name)
        r = v.report if v is not None else None
        tool = r.restore_tool if r is not None else None
        members.append(PlannedMember(
            member=m.name, agent=m.agent, peer_url=(_peer_url(v) if v is not None else None) or "",
            data_dir=r.member.data_dir if r else "", wal_dir=r.member.wal_dir if r else None,
            runtime=r.member.runtime if r else None, apiserver=r.member.apiserver if r else None,
            restart=r.member.restart if r else (), tool=f"{tool.kind} {tool.version}" if tool else ""))
    healthy = [v for v in views if v.healthy]
    revisions = [v.etcd.revision for v in views if v.reachable and v.etcd.revision is not None]
    live_revision = max(revisions) if revisions else None
    ids = sorted({v.etcd.cluster_id for v in healthy if v.etcd.cluster_id})
    live_cluster_id = ids[0] if len(ids) == 1 else None
    tools = [v.report.restore_tool for v in views if v.report is not None]
    can_bump = bool(tools) and all(t is not None and t.supports_bump for t in tools)
    if options.bump_revision > 0 and can_bump:
        bump = bump_for(options.bump_revision, snapshot.revision, live_revision)
    else:
        bump = 0
        if options.bump_revision > 0:
            warnings.append("no revision bump: not every member's restore tool supports --bump-revision "
                            "(etcd >= 3.5.10 etcdutl). Kubernetes watch caches may see revisions go backwards; "
                            "the restart-controllers phase and a kubelet restart are the remedy")
    initial_cluster = ",".join(f"{m.member}={m.peer_url}" for m in members)
    token = f"etcdguard-{op}"
    safety = options.safety_snapshot and bool(healthy)
    if options.safety_snapshot and not healthy:
        warnings.append("the live cluster does not answer: no pre-restore safety snapshot can be taken")
    discarded = (live_revision - snapshot.revision) if live_revision is not None else None
    if discarded is not None and discarded < 0:
        discarded = 0
    plan_id = plan_digest(snapshot, members, bump=bump, force=options.force, live_cluster_id=live_cluster_id,
                          refusals=refusals, kind=options.kind)
    base = RestorePlan(
        plan_id=plan_id, op=op, kind=options.kind, snapshot=snapshot, members=tuple(members),
        initial_cluster=initial_cluster, token=token, bump_revision=bump,
        expected_min_revision=snapshot.revision + bump, live_revision=live_revision,
        live_cluster_id=live_cluster_id, discarded_revisions=discarded, safety_snapshot=safety, phases=(),
        refusals=tuple(refusals), warnings=tuple(warnings), force=options.force, rollback_of=options.rollback_of,
        created_at=created_at, start_timeout=options.start_timeout, fence_settle=options.fence_settle)
    return _with_phases(base)


def _with_phases(p: RestorePlan) -> RestorePlan:
    from dataclasses import replace

    return replace(p, phases=describe_phases(p))


def describe_phases(p: RestorePlan) -> tuple[PlannedPhase, ...]:
    """What each phase does on each node, in words an operator checks before saying yes."""
    snap = p.snapshot
    bump = (f"--bump-revision {p.bump_revision:,} --mark-compacted (restored revision >= "
            f"{p.expected_min_revision:,})" if p.bump_revision else "no revision bump")
    safety = ("take a pre-restore safety snapshot of the live cluster into the vault (pinned)"
              if p.safety_snapshot else "no safety snapshot (the live cluster does not answer)")
    with_api = [m for m in p.members if m.apiserver]
    phases = [
        PlannedPhase(ph.PREFLIGHT, False,
                     "every agent reachable; member list, tools, disk, quota and versions checked; the vault copy's "
                     f"sha256 verified; live revision recorded; {safety}", "abort: nothing changed"),
        PlannedPhase(ph.STAGE, False,
                     f"send snapshot {snap.id[:12]} ({format_bytes(snap.size)}) to every agent in parallel; "
                     "each checks its sha256 against the vault's", "abort: staged copies removed"),
        PlannedPhase(ph.PREPARE, False,
                     "while etcd still serves, at low CPU and I/O priority: restore into a new dir on the data dir's "
                     f"filesystem with token {p.token} and {bump}", "abort: prepared dirs removed everywhere",
                     tuple((m.member, f"{m.tool or 'restore tool'}: --name {m.member} --initial-advertise-peer-urls "
                                      f"{m.peer_url} into {m.data_dir}/.etcdguard-{p.op}/data"
                           + (f" (WAL into {m.wal_dir})" if m.wal_dir else "")) for m in p.members)),
        PlannedPhase(ph.FENCE, True,
                     f"stop kube-apiserver on {len(with_api)} node(s), proven; then the revision must stay still "
                     f"for {p.fence_settle:g}s (no other writer)",
                     "start the kube-apiservers again",
                     tuple((m.member, f"stop {m.apiserver}" if m.apiserver else "no kube-apiserver here")
                           for m in p.members)),
        PlannedPhase(ph.STOP, True, "stop etcd on every member, proven (client port closed, bbolt lock free)",
                     "start etcd and kube-apiserver again"),
        PlannedPhase(ph.SWAP, True, f"rename member -> member.etcdguard-{p.op} (kept for rollback) and the prepared "
                                    "data into place", "swap back, restart",
                     tuple((m.member, f"in {m.data_dir}" + (f" and {m.wal_dir}" if m.wal_dir else ""))
                           for m in p.members)),
        PlannedPhase(ph.START, True, f"start etcd on every member in parallel; wait up to {p.start_timeout:g}s for "
                                     "quorum, one leader, every member healthy",
                     "stop all, swap back all, start all, wait for quorum, unfence"),
        PlannedPhase(ph.VERIFY, False,
                     "every member healthy, one leader, one new cluster id"
                     + (f" (not {p.live_cluster_id})" if p.live_cluster_id else "")
                     + f", member list = these {len(p.members)} voters, no alarms, revision >= "
                     f"{p.expected_min_revision:,}, the same hashkv on every member at one revision",
                     "cluster rollback (all members at once)"),
        PlannedPhase(ph.UNFENCE, True, "start kube-apiserver on every node; wait for its health where health_url "
                                       "is set", "report: the data is restored; start them by hand",
                     tuple((m.member, f"start {m.apiserver}" if m.apiserver else "no kube-apiserver here")
                           for m in p.members)),
        PlannedPhase(ph.RESTART, True, "restart what each agent names in [[restart]] so nothing serves "
                                       "pre-restore caches", "report",
                     tuple((m.member, ", ".join(m.restart) if m.restart else "nothing configured")
                           for m in p.members)),
    ]
    return tuple(phases)


def render_plan(p: RestorePlan) -> str:
    """The plan for a terminal."""
    snap = p.snapshot
    title = ("cluster restore" if p.kind == KIND_RESTORE
             else f"rollback of {p.rollback_of}: a new, forward restore of its pre-restore snapshot")
    lines = [f"{title}, plan {p.plan_id} (operation {p.op})",
             f"  snapshot {snap.id[:12]}: revision {snap.revision:,}, {format_bytes(snap.size)}, taken "
             f"{snap.created_at} on {snap.member}" + (f", etcd {snap.etcd_version}" if snap.etcd_version
                                                             else "")]
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
    if p.refusals:
        lines.append("  REFUSED:" if p.blocking else "  overridden by --force:")
        for r in p.refusals:
            where = f"{r.member}: " if r.member else ""
            forced = " (overridden by --force)" if r.forcible and p.force else ""
            lines.append(f"    - {where}{r.message}{forced}")
    else:
        lines.append("  preflight: no reason to refuse")
    lines.append("  nothing has been changed" + ("" if p.blocking else
                                                  f"; run it with: etcdguardctl restore {snap.id[:12]} --yes "
                                                  f"--plan-id {p.plan_id}"))
    return "\n".join(lines)


@dataclass(frozen=True)
class PhaseTiming:
    phase: str
    seconds: float


@dataclass(frozen=True)
class Summary:
    """What an operator reads when a restore ends."""

    op: str
    state: str
    plan_id: str
    snapshot: str
    phases: tuple[PhaseTiming, ...] = ()
    downtime_seconds: Optional[float] = None
    total_seconds: Optional[float] = None
    new_cluster_id: Optional[str] = None
    old_cluster_id: Optional[str] = None
    kept: tuple[tuple[str, str], ...] = ()           # (member, path of the pre-restore data)
    pre_restore_snapshot: Optional[str] = None
    error: Optional[str] = None
    failed_phase: Optional[str] = None
    notes: tuple[str, ...] = field(default_factory=tuple)
