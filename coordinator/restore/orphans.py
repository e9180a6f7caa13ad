"""Operations only the agents know: taken over by a coordinator that lost (or never had) their journal.

When a coordinator host dies with a restore paused or half-done, a new
coordinator has no journal of it, while every agent still holds its part
(open, blocking backups and new restores). ``orphans`` finds them in the
agents' status reports; ``adopt`` asks each agent what it recorded
(``restore.status``: the operation's parameters and the steps that started
and finished there) and writes a journal that says exactly that, with a plan
rebuilt from the agents' parameters, marked interrupted. From there the
ordinary engine rolls it back on every member at once, as it would any
interrupted operation (``etcdguardctl restore --rollback OP``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from etcdguard.common.base.errors import UsageError
from etcdguard.common.ops.cluster_plan import PlannedMember, RestorePlan, SnapshotRef
from etcdguard.common.ops.flows import CLUSTER_RESTORE
from etcdguard.common.ops.record import DONE, STARTED
from etcdguard.common.ops.states import OpState
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings
from etcdguard.coordinator.restore.journal import ClusterOperation, JournalStore

KIND_ADOPTED = "adopted"
Status = Mapping[str, Any]      # an agent's restore.status reply


def orphans(views: Sequence[MemberView], known: Sequence[str]) -> dict[str, list[str]]:
    """Operations open on some agent that this coordinator has no journal of -> the members holding them."""
    out: dict[str, list[str]] = {}
    for v in views:
        if v.report is None:
            continue
        for op in v.report.restore.open_ops:
            if op not in known:
                out.setdefault(op, []).append(v.name)
    return {op: sorted(members) for op, members in sorted(out.items())}


def adopted_plan(op: str, statuses: Mapping[str, Status], configured: Sequence[MemberSettings]) -> RestorePlan:
    """The plan an operation ran with, rebuilt from what its agents recorded (pure).

    UsageError when no agent recorded its parameters (nothing to take over)."""
    params = {m: s.get("params") or {} for m, s in statuses.items() if isinstance(s.get("params"), dict)}
    first = next((p for p in params.values() if p.get("snapshot_sha256")), None)
    if first is None:
        raise UsageError(f"restore {op}: no agent recorded its parameters; there is nothing to take over")
    members = []
    for m in configured:
        p = params.get(m.name, {})
        members.append(PlannedMember(member=m.name, agent=m.agent, peer_url=str(p.get("peer_url") or ""),
                                     data_dir=str(p.get("data_dir") or ""), wal_dir=p.get("wal_dir") or None))
    revision, bump = int(first.get("snapshot_revision") or 0), int(first.get("bump_revision") or 0)
    snapshot = SnapshotRef(id=str(first["snapshot_sha256"]), size=int(first.get("snapshot_size") or 0),
                           revision=revision, member="", created_at="", created_unix=0.0)
    return RestorePlan(
        plan_id="adopted", op=op, kind=KIND_ADOPTED, snapshot=snapshot, members=tuple(members),
        initial_cluster=str(first.get("initial_cluster") or ""), token=str(first.get("token") or ""),
        bump_revision=bump, expected_min_revision=revision + bump, live_revision=None,
        live_cluster_id=str(first.get("live_cluster_id") or "") or None, discarded_revisions=None,
        safety_snapshot=False, phases=(), created_at="",
        warnings=("taken over from the agents' records: this coordinator had no journal of it",))


def _progress(statuses: Mapping[str, Status]) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """member -> (steps that started there, results of those that finished)."""
    out = {}
    for member, s in statuses.items():
        started = [str(x) for x in s.get("started") or [] if isinstance(x, str)]
        done = {k: v for k, v in (s.get("steps") or {}).items() if isinstance(k, str) and not k.startswith("undo-")}
        out[member] = (sorted(set(started) | set(done)), done)
    return out


def adopt(journals: JournalStore, op: str, statuses: Mapping[str, Status],
          configured: Sequence[MemberSettings]) -> ClusterOperation:
    """Write the journal of an operation only the agents know, as interrupted; return it."""
    plan = adopted_plan(op, statuses, configured)
    operation = journals.create(plan)
    log = operation.log
    log.emit("adopted", members=sorted(statuses), why="this coordinator had no journal of the operation")
    progress = _progress(statuses)
    for step in CLUSTER_RESTORE.steps:
        if step.name == "stage" and any("prepare" in started for started, _ in progress.values()):
            holders = sorted(progress)           # an agent prepares only what was staged there first
            log.emit("phase", phase=step.name, status=STARTED)
            for m in holders:
                log.emit("step", phase=step.name, member=m, status=DONE, result={"adopted": True})
            log.emit("phase", phase=step.name, status=DONE)
            continue
        _adopt_step(log, step.name, progress)
    log.set_state(OpState.INTERRUPTED, why="taken over from the agents' records")
    return journals.open(op)


def _adopt_step(log: Any, name: str, progress: Mapping[str, tuple[list[str], dict[str, Any]]]) -> None:
    started = [m for m, (steps, _) in progress.items() if name in steps]
    if not started:
        return
    log.emit("phase", phase=name, status=STARTED)
    for m in started:
        result: Optional[Any] = progress[m][1].get(name)
        log.emit("step", phase=name, member=m, status=STARTED)
        if name in progress[m][1]:
            log.emit("step", phase=name, member=m, status=DONE, result=result if isinstance(result, dict) else {})
    if all(name in done for _, done in progress.values()):
        log.emit("phase", phase=name, status=DONE)

