"""Runs a cluster restore: phase by phase, journaled, with a barrier between phases.

``run`` goes forward from the first phase the journal does not record as
done (a resume is the same call on an interrupted operation). A failure up
to and including ``verify`` rolls the cluster back at once: the phases that
started are reverted newest first, each on all members together. A failure
after ``unfence`` (clients have seen the restored data) is reported and left
for the operator: swapping old data back then would send revisions
backwards. ``rollback`` reverts an interrupted or paused operation the same
way. Every state change goes through the transitions table (states.py).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops import phases as ph
from etcdguard.coordinator.restore.agents import Interrupted
from etcdguard.coordinator.restore.journal import DONE, FAILED, STARTED, OperationRecord, PhaseStatus, set_state
from etcdguard.coordinator.restore.plan import PhaseTiming, Summary
from etcdguard.coordinator.restore.states import OpState
from etcdguard.coordinator.restore.steps import PHASES, Phase, PhaseFailed, RunContext, remove_staged

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def record(self) -> OperationRecord:
        return self.ctx.record

    # -- forward -----------------------------------------------------------
    def run(self) -> Summary:
        ctx, rec = self.ctx, self.record
        if rec.state != OpState.RUNNING:
            set_state(ctx.journal, rec, OpState.RUNNING, why="resumed")
        for p in PHASES:
            if rec.phase_done(p.name):
                continue
            try:
                self._forward(p)
            except Interrupted:
                set_state(ctx.journal, rec, OpState.INTERRUPTED, why="the coordinator stopped")
                return self.summary()
            except PhaseFailed as exc:
                return self._failed(p, exc)
            if rec.until == p.name and p.name != PHASES[-1].name:
                ctx.say(p.name, f"paused after {p.name}, as asked: resume with `etcdguardctl restore --resume "
                                f"{ctx.op}` or roll back with `--rollback {ctx.op}`")
                set_state(ctx.journal, rec, OpState.PAUSED, why=f"--until {p.name}")
                return self.summary()
        self._close("done")
        set_state(ctx.journal, rec, OpState.DONE)
        return self.summary()

    def _forward(self, p: Phase) -> None:
        ctx, rec = self.ctx, self.record
        ctx.journal.append("phase", phase=p.name, status=STARTED)
        rec.phases[p.name] = _status(STARTED)
        ctx.say(p.name, "started")
        started = time.monotonic()
        try:
            p.execute(ctx)
        except Interrupted:
            raise
        except PhaseFailed as exc:
            ctx.journal.append("phase", phase=p.name, status=FAILED, error=str(exc))
            rec.phases[p.name].status = FAILED
            raise
        except EtcdguardError as exc:   # a cluster check that failed outside a member's step
            ctx.journal.append("phase", phase=p.name, status=FAILED, error=str(exc))
            rec.phases[p.name].status = FAILED
            raise PhaseFailed(p.name, f"{p.name} failed: {exc}", exc.exit_code) from exc
        ctx.journal.append("phase", phase=p.name, status=DONE, seconds=round(time.monotonic() - started, 3))
        rec.phases[p.name].status = DONE
        rec.phases[p.name].ended_at = time.time()
        ctx.say(p.name, f"done in {time.monotonic() - started:.1f}s")

    def _failed(self, p: Phase, exc: PhaseFailed) -> Summary:
        ctx, rec = self.ctx, self.record
        log.error("restore %s: %s", ctx.op, exc)
        if p.name not in ph.BEFORE_CLIENTS:
            set_state(ctx.journal, rec, OpState.NEEDS_ATTENTION, error=str(exc), failed_phase=p.name)
            ctx.say(p.name, "the data is restored, but this phase failed; fix what it names and resume with "
                            f"`etcdguardctl restore --resume {ctx.op}`")
            return self.summary()
        set_state(ctx.journal, rec, OpState.ROLLING_BACK, error=str(exc), failed_phase=p.name)
        ctx.say(p.name, f"failed; rolling every member back: {exc}")
        return self._revert(OpState.FAILED)

    # -- backward ----------------------------------------------------------
    def rollback(self) -> Summary:
        """Revert an interrupted, paused or half-rolled-back operation (one that clients have not seen)."""
        ctx, rec = self.ctx, self.record
        reached = rec.reached()
        if any(p in reached for p in (ph.UNFENCE, ph.RESTART)):
            raise PhaseFailed(ph.UNFENCE, f"operation {ctx.op} reached unfence: clients may have seen the restored "
                                          "data; a rollback is a new restore of its pre-restore snapshot")
        if rec.state != OpState.ROLLING_BACK:
            set_state(ctx.journal, rec, OpState.ROLLING_BACK, why="rollback requested")
        return self._revert(OpState.ROLLED_BACK if rec.failed_phase is None else OpState.FAILED)

    def _revert(self, final: OpState) -> Summary:
        ctx, rec = self.ctx, self.record
        try:
            for p in reversed(PHASES):
                if p.name not in rec.phases or p.name not in ph.BEFORE_CLIENTS:
                    continue
                done = rec.reverts.get(p.name)
                if done is not None and done.status == DONE:
                    continue
                if p.name == ph.STAGE:
                    self._close("failed" if final == OpState.FAILED else "rolled-back")
                ctx.journal.append("revert-phase", phase=p.name, status=STARTED)
                rec.reverts[p.name] = _status(STARTED)
                ctx.say(p.name, "reverting")
                p.revert(ctx)
                ctx.journal.append("revert-phase", phase=p.name, status=DONE)
                rec.reverts[p.name].status = DONE
        except Interrupted:
            set_state(ctx.journal, rec, OpState.INTERRUPTED, why="the coordinator stopped during the rollback")
            return self.summary()
        except EtcdguardError as exc:
            set_state(ctx.journal, rec, OpState.NEEDS_ATTENTION, error=f"rollback failed: {exc}",
                      failed_phase=rec.failed_phase or "rollback")
            ctx.say("rollback", f"FAILED: {exc}; the journal {ctx.journal.path} shows what was undone")
            return self.summary()
        set_state(ctx.journal, rec, final)
        ctx.say("rollback", "every member is back on its pre-restore data")
        return self.summary()

    def _close(self, outcome: str) -> None:
        """Close the operation on every agent (backups resume there) and drop the staged uploads."""
        ctx = self.ctx
        prepared = ctx.started(ph.PREPARE)
        for member in prepared:
            try:
                ctx.agents.step(member, ctx.op, "finish", {"outcome": outcome}, bound=ctx.timeouts.step)
            except EtcdguardError as exc:
                log.warning("member %s: could not close operation %s: %s", member, ctx.op, exc)
        if outcome == "done":
            remove_staged(ctx, ctx.started(ph.STAGE))

    # -- reporting -----------------------------------------------------------
    def summary(self) -> Summary:
        return summarize(self.record)


def _status(status: str) -> PhaseStatus:
    return PhaseStatus(status, started_at=time.time())


def summarize(rec: OperationRecord) -> Summary:
    """What an operator reads at the end (pure over the record)."""
    timings = []
    for p in rec.plan.phases:
        s = rec.phases.get(p.phase)
        if s is not None and s.started_at is not None and s.ended_at is not None:
            timings.append(PhaseTiming(p.phase, round(s.ended_at - s.started_at, 3)))
    fence, unfence = rec.phases.get(ph.FENCE), rec.phases.get(ph.UNFENCE)
    downtime: Optional[float] = None
    if fence is not None and fence.started_at is not None:
        end = unfence.ended_at if unfence is not None and unfence.status == DONE else None
        if end is None:
            rev = rec.reverts.get(ph.FENCE)
            end = rev.ended_at if rev is not None and rev.status == DONE else None
        if end is not None:
            downtime = round(end - fence.started_at, 3)
    kept = rec.facts.get("kept") or {}
    first = min((s.started_at for s in rec.phases.values() if s.started_at), default=None)
    last = rec.ended_at or max((s.ended_at or 0 for s in [*rec.phases.values(), *rec.reverts.values()]),
                               default=None)
    notes = []
    if rec.state in (OpState.DONE,) and rec.plan.bump_revision == 0:
        notes.append("revisions were not bumped; restart kubelets and controllers so no client keeps newer "
                     "revisions than etcd now has")
    return Summary(
        op=rec.op, state=rec.state.value, plan_id=rec.plan.plan_id, snapshot=rec.plan.snapshot.id,
        phases=tuple(timings), downtime_seconds=downtime,
        total_seconds=round(last - first, 3) if first and last else None,
        new_cluster_id=rec.facts.get("new_cluster_id"), old_cluster_id=rec.facts.get("old_cluster_id"),
        kept=tuple((m, str(path)) for m, path in sorted(kept.items()) if path),
        pre_restore_snapshot=rec.facts.get("pre_restore_snapshot"), error=rec.error,
        failed_phase=rec.failed_phase, notes=tuple(notes))
