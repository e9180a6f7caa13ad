"""One running cluster operation: the coordinator's side of common/ops/ports.ClusterRun.

A step's phase behaviour acts on every member in parallel through ``each``
(one thread per member; each member's step journaled as started before it is
sent and as done or failed after; then a barrier) and asks etcd through the
agents (``inspect_all``). Everything that crosses to an agent goes through
ClusterAgents (agents.py), which waits out slow steps and restarted agents.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import Emit, Inspection, Timeouts
from etcdguard.common.ops.record import DONE, FAILED, STARTED, OpRecord
from etcdguard.common.ops.step import Interrupted, StepFailed
from etcdguard.common.wire.report import EtcdHealth
from etcdguard.coordinator.restore.agents import ClusterAgents
from etcdguard.coordinator.restore.journal import ClusterOperation


class RunContext:
    """ClusterRun for one operation run by this coordinator."""

    def __init__(self, operation: ClusterOperation, agents: ClusterAgents, emit: Emit, *,
                 snapshot_file: Callable[[], AbstractContextManager[Path]],
                 safety_snapshot: Callable[[Emit], Optional[str]],
                 timeouts: Optional[Timeouts] = None, cancel: Optional[threading.Event] = None) -> None:
        self.operation = operation
        self.agents = agents
        self._emit = emit
        self._snapshot_file = snapshot_file
        self._safety_snapshot = safety_snapshot
        self._timeouts = timeouts or Timeouts()
        self.cancel = cancel or threading.Event()
        # Members whose undo failed during this rollback (their agent away, say): the others are put back
        # without them, and the operation then needs attention naming them.
        self.undo_errors: dict[str, str] = {}

    @property
    def left_out(self) -> frozenset[str]:
        return frozenset(self.undo_errors)

    # -- what the steps read ----------------------------------------------------------
    @property
    def plan(self) -> RestorePlan:
        return self.operation.plan

    @property
    def record(self) -> OpRecord:
        return self.operation.record

    @property
    def op(self) -> str:
        return self.operation.op

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.member for m in self.plan.members)

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    def fact(self, key: str, value: Any) -> None:
        self.operation.log.fact(key, value)

    def say(self, phase: str, message: str, member: Optional[str] = None, **extra: Any) -> None:
        event = {"phase": phase, "message": message, **extra}
        if member is not None:
            event["member"] = member
        self._emit(event)

    def emit(self, event: Mapping[str, Any]) -> None:
        self._emit(event)

    def pause(self, seconds: float) -> None:
        if self.agents.stop.wait(seconds):
            raise Interrupted("the coordinator is stopping")

    # -- every member at once -------------------------------------------------------------
    def each(self, phase: str, action: Callable[[str], dict[str, Any]], *, revert: bool = False,
             members: Optional[Sequence[str]] = None) -> dict[str, dict[str, Any]]:
        """Run ``action(member)`` on every member in parallel; journal each; barrier; raise on any failure.

        With ``revert`` a member whose undo fails is left out of the rest of the rollback instead (the
        others go on being put back: a member whose agent is away must not keep them down)."""
        results, todo = self._recorded(phase, members if members is not None else self.names, revert)
        if not todo:
            return results
        done, errors = self._run_all(phase, todo, action, revert)
        results.update(done)
        if errors and revert:
            for member, why in errors.items():
                self.undo_errors[member] = f"undoing {phase}: {why}"
        elif errors:
            raise StepFailed(phase, f"{phase} failed on {len(errors)} of {len(self.names)} member(s): "
                                    + "; ".join(f"{m}: {e}" for m, e in errors.items()))
        return results

    def _recorded(self, phase: str, members: Sequence[str], revert: bool
                  ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """(results the journal already holds, members still to do)."""
        steps = self.record.revert_steps if revert else self.record.steps
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for m in members:
            if revert and m in self.undo_errors:
                continue        # an earlier undo failed there: later undos would act on a guess
            done = steps.get((phase, m))
            if done is not None and done.status == DONE:
                results[m] = done.result if isinstance(done.result, dict) else {}
            else:
                todo.append(m)
        return results, todo

    def _run_all(self, phase: str, todo: list[str], action: Callable[[str], dict[str, Any]], revert: bool
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """``action`` on every member of ``todo`` at once, each journaled; (results, errors by member)."""
        log = self.operation.log
        event = "revert-step" if revert else "step"

        def one(member: str) -> dict[str, Any]:
            log.emit(event, phase=phase, member=member, status=STARTED)
            try:
                result = action(member)
            except Interrupted:
                raise
            except (EtcdguardError, OSError) as exc:
                log.emit(event, phase=phase, member=member, status=FAILED, error=str(exc))
                raise
            log.emit(event, phase=phase, member=member, status=DONE, result=result)
            return result

        results: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        interrupted: Optional[Interrupted] = None
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix=phase) as pool:
            futures = {m: pool.submit(one, m) for m in todo}
            for m, f in futures.items():
                try:
                    results[m] = f.result()
                except Interrupted as exc:
                    interrupted = exc
                except (EtcdguardError, OSError) as exc:
                    errors[m] = str(exc)
        if interrupted is not None:
            raise interrupted
        return results, errors

    def started(self, phase: str) -> list[str]:
        return [m for m in self.names if (phase, m) in self.record.steps]

    @property
    def _flow(self) -> Optional[str]:
        """The flow named in the agents' requests: none for a restore (what agents before flows understand)."""
        return None if self.plan.flow == "restore" else self.plan.flow

    def send_step(self, member: str, step: str, params: Optional[Mapping[str, Any]], bound: float
                  ) -> dict[str, Any]:
        return self.agents.step(member, self.op, step, params, bound=bound, flow=self._flow)

    def send_undo(self, member: str, step: str, bound: float) -> Optional[dict[str, Any]]:
        return self.agents.undo(member, self.op, f"undo-{step}", bound=bound, flow=self._flow)

    def etcd_admin(self, member: str, action: str, args: Mapping[str, Any], bound: float) -> dict[str, Any]:
        return self.agents.admin(member, action, args, bound=bound)

    def inspect_all(self, names: Sequence[str], hashkv_revision: Optional[int] = None
                    ) -> dict[str, Inspection]:
        out: dict[str, Inspection] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            futures = {n: pool.submit(self.agents.inspect, n, hashkv_revision) for n in names}
            for n, f in futures.items():
                try:
                    out[n] = f.result()
                except EtcdguardError as exc:
                    out[n] = (EtcdHealth(error=str(exc)), None)
        return out

    # -- the snapshot -----------------------------------------------------------------------
    def safety_snapshot(self, emit: Emit) -> Optional[str]:
        return self._safety_snapshot(emit)

    def held_snapshot(self, member: str) -> Optional[str]:
        return self.agents.held_snapshot(member, self.plan.restored.id, self.plan.restored.size)

    def upload(self, member: str, progress: Callable[[int, int], None]) -> dict[str, Any]:
        with self._snapshot_file() as path:
            return self.agents.upload(member, path, self.op, progress=progress, bound=self.timeouts.stage)

    def abort_upload(self, member: str) -> None:
        self.agents.abort_upload(member, self.op)
