"""The coordinator's operation engine: a flow's steps, phase by phase, journaled, with a barrier between.

The engine reads the steps' flags (common/ops/step.py), never their names.
``run`` goes forward from the first step the journal does not record as done
(a resume is the same call on an interrupted operation). A failure before
any step whose effect clients may see (``clients_see``) rolls the cluster back
at once: the steps that started are reverted newest first, each on all
members together, and the agents' operations are closed before the
coordinator's own steps (staging) are reverted. A failure from a
``clients_see`` step on is reported and left for the operator: swapping old
data back then would send revisions backwards. ``rollback`` reverts an
interrupted or paused operation the same way. Every state change goes
through the cluster transitions table (common/ops/states.py).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.cluster_checks import quorum_problem
from etcdguard.common.ops.cluster_plan import PhaseTiming, Summary
from etcdguard.common.ops.record import DONE, FAILED, STARTED, OpRecord
from etcdguard.common.ops.states import OpState
from etcdguard.common.ops.step import Interrupted, Step, StepFailed
from etcdguard.coordinator.restore.journal import ClusterOperation
from etcdguard.coordinator.restore.run import RunContext

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, run: RunContext) -> None:
        self.ctx = run

    @property
    def operation(self) -> ClusterOperation:
        return self.ctx.operation

    # -- forward -----------------------------------------------------------
    def run(self) -> Summary:
        op, rec = self.operation, self.operation.record
        if rec.state is not OpState.RUNNING:
            op.log.set_state(OpState.RUNNING, why="resumed")
        steps = op.flow.steps
        for step in steps:
            if rec.phase_done(step.name):
                continue
            if self.ctx.cancel.is_set() and op.flow.rollback_possible(op.reached()):
                return self._cancelled(step)
            if self.ctx.cancel.is_set():
                self.ctx.say(step.name, "too late to cancel: clients may have seen the restored data; the "
                                        "restore finishes (a rollback is then a new restore of its pre-restore "
                                        "snapshot)")
                self.ctx.cancel.clear()
            try:
                self._forward(step)
            except Interrupted:
                op.log.set_state(OpState.INTERRUPTED, why="the coordinator stopped")
                return self.summary()
            except StepFailed as exc:
                return self._failed(step, exc)
            if rec.until == step.name and step is not steps[-1]:
                self.ctx.say(step.name, f"paused after {step.name}, as asked: resume with `etcdguardctl "
                                        f"{op.flow.command} --resume {op.op}` or roll back with `--rollback {op.op}`")
                op.log.set_state(OpState.PAUSED, why=f"--until {step.name}")
                return self.summary()
        self._close("done")
        for step in steps:
            step.after_done(self.ctx)
        op.log.set_state(OpState.DONE)
        return self.summary()

    def _forward(self, step: Step) -> None:
        op, ctx = self.operation, self.ctx
        op.log.emit("phase", phase=step.name, status=STARTED)
        ctx.say(step.name, "started")
        started = time.monotonic()
        try:
            step.phase(ctx)
        except Interrupted:
            raise
        except StepFailed as exc:
            op.log.emit("phase", phase=step.name, status=FAILED, error=str(exc))
            raise
        except EtcdguardError as exc:   # a cluster check that failed outside a member's step
            op.log.emit("phase", phase=step.name, status=FAILED, error=str(exc))
            raise StepFailed(step.name, f"{step.name} failed: {exc}", exc.exit_code) from exc
        op.log.emit("phase", phase=step.name, status=DONE, seconds=round(time.monotonic() - started, 3))
        ctx.say(step.name, f"done in {time.monotonic() - started:.1f}s")

    def _failed(self, step: Step, exc: StepFailed) -> Summary:
        op, ctx = self.operation, self.ctx
        log.error("restore %s: %s", op.op, exc)
        if step.clients_see:
            op.log.set_state(OpState.NEEDS_ATTENTION, error=str(exc), failed_phase=step.name)
            done = "the data is restored, but " if op.flow.command == "restore" else "there is no way back from here: "
            ctx.say(step.name, f"{done}this phase failed; fix what it names and resume with "
                               f"`etcdguardctl {op.flow.command} --resume {op.op}`")
            return self.summary()
        op.log.set_state(OpState.ROLLING_BACK, error=str(exc), failed_phase=step.name)
        ctx.say(step.name, f"failed; rolling every member back: {exc}")
        return self._revert(OpState.FAILED)

    def _cancelled(self, step: Step) -> Summary:
        op = self.operation
        op.log.set_state(OpState.ROLLING_BACK, why="cancelled by the operator", failed_phase=step.name)
        self.ctx.say(step.name, "cancelled before this phase; rolling every member back")
        return self._revert(OpState.ROLLED_BACK)

    # -- backward ----------------------------------------------------------
    def rollback(self) -> Summary:
        """Revert an interrupted, paused, failed-half-way or half-rolled-back operation (one that clients
        have not seen). The operator asked for it, so when every member is put back it is rolled back,
        whatever failure led here (the summary names that failure)."""
        op = self.operation
        reached = op.reached()
        if not op.flow.rollback_possible(reached):
            seen = next(name for name in reached if op.flow.step(name).clients_see)
            if op.flow.command != "restore":
                raise StepFailed(seen, f"operation {op.op} reached {seen}, which cannot be undone: finish it with "
                                       f"`etcdguardctl {op.flow.command} --resume {op.op}`", 3)
            raise StepFailed(seen, f"operation {op.op} reached {seen}: clients may have seen the restored data; "
                                   "a rollback is a new restore of its pre-restore snapshot")
        if op.record.error and "failure" not in op.record.facts:
            self.ctx.fact("failure", {"phase": op.record.failed_phase, "error": op.record.error})
        if op.state is not OpState.ROLLING_BACK:
            op.log.set_state(OpState.ROLLING_BACK, why="rollback requested")
        return self._revert(OpState.ROLLED_BACK)

    def _revert(self, final: OpState) -> Summary:
        op, ctx = self.operation, self.ctx
        outcome = "failed" if final is OpState.FAILED else "rolled-back"
        try:
            self._revert_steps(outcome)
            if not ctx.left_out:
                self._check_put_back()
        except Interrupted:
            op.log.set_state(OpState.INTERRUPTED, why="the coordinator stopped during the rollback")
            return self.summary()
        except EtcdguardError as exc:
            op.log.set_state(OpState.NEEDS_ATTENTION, error=f"rollback failed: {exc}",
                             failed_phase=op.record.failed_phase or "rollback")
            ctx.say("rollback", f"FAILED: {exc}; the journal {op.log.path} shows what was undone")
            return self.summary()
        if ctx.left_out:
            return self._left_out()
        op.log.set_state(final, clear_error=final is OpState.ROLLED_BACK)
        ctx.say("rollback", "every member is back on its pre-restore data")
        return self.summary()

    def _revert_steps(self, outcome: str) -> None:
        """Each started step's revert, newest first; the agents' operations end before the coordinator's
        own steps (staging) are reverted."""
        op, ctx, rec = self.operation, self.ctx, self.operation.record
        closed = False
        for step in reversed(op.flow.steps):
            if step.name not in rec.phases or step.clients_see:
                continue
            if not step.on_agent and not closed:
                self._close(outcome, skip=ctx.left_out)
                closed = True
            done = rec.reverts.get(step.name)
            if done is not None and done.status == DONE:
                continue
            op.log.emit("revert-phase", phase=step.name, status=STARTED)
            ctx.say(step.name, "reverting")
            step.revert(ctx)
            pending = _not_undone(rec, step, ctx.started(step.name))
            if pending:
                op.log.emit("revert-phase", phase=step.name, status=FAILED,
                            error=f"not undone on {', '.join(pending)}")
            else:
                op.log.emit("revert-phase", phase=step.name, status=DONE)
        if not closed:
            self._close(outcome, skip=ctx.left_out)

    def _check_put_back(self) -> None:
        """After a rollback of a cluster that was up: quorum again, under its old cluster id."""
        ctx, rec = self.ctx, self.operation.record
        if rec.facts.get("down_before") or "stop" not in rec.phases:
            return
        health = {n: h for n, (h, _) in ctx.inspect_all(ctx.names).items()}
        problem = quorum_problem(health)
        old = rec.facts.get("old_cluster_id")
        ids = {h.cluster_id for h in health.values()}
        if problem is None and old and ids != {old}:
            problem = f"the cluster id is {', '.join(sorted(str(i) for i in ids))}, not the old {old}"
        if problem is not None:
            raise StepFailed("rollback", f"the members were put back, but the old cluster does not verify: {problem}")

    def _left_out(self) -> Summary:
        op, ctx = self.operation, self.ctx
        back = [m for m in ctx.names if m not in ctx.left_out]
        why = "; ".join(f"{m}: {e}" for m, e in sorted(ctx.undo_errors.items()))
        message = (f"rollback incomplete: {why}. {', '.join(back)} are back on their pre-restore data"
                   + (" with quorum" if "stop" in op.record.phases and len(back) * 2 > len(ctx.names) else "")
                   + f"; {', '.join(sorted(ctx.left_out))} not yet: once its agent answers again, "
                   f"`etcdguardctl restore --rollback {op.op}` puts it back")
        op.log.set_state(OpState.NEEDS_ATTENTION, error=message, failed_phase=op.record.failed_phase or "rollback")
        ctx.say("rollback", message)
        return self.summary()

    def _close(self, outcome: str, skip: frozenset[str] = frozenset()) -> None:
        """Close the operation on every agent where it was opened (backups resume there); not on the
        ``skip`` members, whose part is not put back yet."""
        ctx = self.ctx
        opening = [s.name for s in self.operation.flow.steps if s.opens]
        members = sorted({m for name in opening for m in ctx.started(name)} - skip)
        for member in members:
            try:
                ctx.agents.step(member, ctx.op, "finish", {"outcome": outcome}, bound=ctx.timeouts.step)
            except EtcdguardError as exc:
                log.warning("member %s: could not close operation %s: %s", member, ctx.op, exc)

    # -- reporting -----------------------------------------------------------
    def summary(self) -> Summary:
        return summarize(self.operation)


def _not_undone(rec: OpRecord, step: Step, members: list[str]) -> list[str]:
    """The members where ``step`` started but its undo is not recorded done."""
    if not step.undoable:
        return []
    out = []
    for m in members:
        status = rec.revert_steps.get((step.name, m))
        if status is None or status.status != DONE:
            out.append(m)
    return out


def summarize(operation: ClusterOperation) -> Summary:
    """What an operator reads at the end (pure over the record)."""
    rec, plan = operation.record, operation.plan
    timings = []
    for name in operation.flow.names:
        s = rec.phases.get(name)
        if s is not None and s.started_at is not None and s.ended_at is not None:
            timings.append(PhaseTiming(name, round(s.ended_at - s.started_at, 3)))
    downtime = _downtime(operation)
    kept = rec.facts.get("kept") or {}
    first = min((s.started_at for s in rec.phases.values() if s.started_at), default=None)
    last = rec.ended_at or max((s.ended_at or 0 for s in [*rec.phases.values(), *rec.reverts.values()]),
                               default=None)
    notes = []
    failure = rec.facts.get("failure")
    if rec.state is OpState.ROLLED_BACK and isinstance(failure, dict) and failure.get("error"):
        notes.append(f"the restore had failed in {failure.get('phase') or '?'} ({failure['error']}); every member "
                     "is back on its pre-restore data")
    if rec.state is OpState.DONE and plan.bump_revision == 0 and plan.snapshot is not None:
        notes.append("revisions were not bumped; restart kubelets and controllers so no client keeps newer "
                     "revisions than etcd now has")
    return Summary(
        op=rec.op, state=rec.state.value, plan_id=plan.plan_id, snapshot=plan.snapshot.id if plan.snapshot else None,
        phases=tuple(timings), downtime_seconds=downtime,
        total_seconds=round(last - first, 3) if first and last else None,
        new_cluster_id=rec.facts.get("new_cluster_id"), old_cluster_id=rec.facts.get("old_cluster_id"),
        kept=tuple((m, str(path)) for m, path in sorted(kept.items()) if path),
        pre_restore_snapshot=rec.facts.get("pre_restore_snapshot"), error=rec.error,
        failed_phase=rec.failed_phase, notes=tuple(notes), down_before=bool(rec.facts.get("down_before")),
        time_to_healthy_seconds=_time_to_healthy(operation), flow=plan.flow, target=plan.target)


def _time_to_healthy(operation: ClusterOperation) -> Optional[float]:
    """From the operation's creation to the end of the step after which the cluster was healthy with the
    operation's effect (the step flagged ``healthy_after``; else the last destructive step before clients see
    it: a restore's start), or None while it was not."""
    rec = operation.record
    healthy_after = ([s.name for s in operation.flow.steps if s.healthy_after]
                     or [s.name for s in operation.flow.steps if s.destructive and not s.clients_see])
    if not healthy_after or rec.state is not OpState.DONE:
        return None
    end = rec.phases.get(healthy_after[-1])
    if end is None or end.ended_at is None or not rec.created_at:
        return None
    return round(end.ended_at - rec.created_at, 3)


def _downtime(operation: ClusterOperation) -> Optional[float]:
    """From the first destructive step's start to the end of the step whose effect clients see (fence..unfence),
    or to the end of its revert when it was rolled back."""
    rec = operation.record
    window = operation.flow.downtime
    if not window:
        return None
    begin, end_step = rec.phases.get(window[0]), rec.phases.get(window[-1])
    if begin is None or begin.started_at is None:
        return None
    end = end_step.ended_at if end_step is not None and end_step.status == DONE else None
    if end is None:
        rev = rec.reverts.get(window[0])
        end = rev.ended_at if rev is not None and rev.status == DONE else None
    return round(end - begin.started_at, 3) if end is not None else None
