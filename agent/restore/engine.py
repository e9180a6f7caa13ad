"""The node's operation engine: runs registry steps, journals each, and undoes them when one fails.

The engine reads only the steps' flags (common/ops/step.py), never their
names: a step runs once per operation (a finished step answers from the
journal); a failure before any client could see the result undoes every
undoable step that started, newest first, and the operation ends ``failed``
with the node as it was; a failure in a step whose effect clients may have
seen is left for the operator (``needs-attention``). Every state change goes
through the node transitions table (common/ops/states.py).

It serves the node-local restore of a single-member cluster (``run``,
``rollback``, ``cleanup``) and, through remote.py, this node's part of a
cluster operation the coordinator runs (``run_step``, ``run_undo``, ``finish``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.restore import swap
from etcdguard.agent.restore.identity import LocalChecks, local_checks
from etcdguard.agent.restore.node import NodeServicesImpl, fingerprint
from etcdguard.agent.restore.plan import argv_problems
from etcdguard.agent.restore.records import (
    KIND_CLUSTER,
    KIND_LOCAL,
    OperationStore,
    flow_of,
    node_params_of,
    params_of,
)
from etcdguard.agent.runtime.base import NodeRuntime
from etcdguard.common.base.errors import EtcdguardError, SnapshotCorrupt, UnsafeRefusal
from etcdguard.common.ops.flows import CLUSTER_RESTORE, NODE_RESTORE, Flow, undone_step
from etcdguard.common.ops.params import MemberParams, RestoreParams
from etcdguard.common.ops.record import DONE, FAILED, STARTED, OpLog
from etcdguard.common.ops.states import FINAL, OpState
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.snapshot.integrity import Recorded, verify_file
from etcdguard.common.snapshot.tools import SnapshotTool

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]   # (step, message)


def _noop(step: str, message: str) -> None:
    return None


@dataclass
class Outcome:
    op: str
    ok: bool
    state: str
    steps: list[dict[str, Any]]
    error: Optional[str] = None
    failed_step: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "ok": self.ok, "state": self.state, "steps": self.steps,
                "error": self.error, "failed_step": self.failed_step}


class NodeEngine:
    """Runs operation steps for one member on this node."""

    def __init__(self, config: AgentConfig, member: LocalMember, runtime: NodeRuntime, tool: SnapshotTool,
                 progress: Progress = _noop) -> None:
        self.config = config
        self.member = member
        self.runtime = runtime
        self.tool = tool
        self.ops = OperationStore(config.state.dir)
        self.progress = progress

    def services(self, oplog: OpLog, *, rollback_requested: bool = False) -> NodeServicesImpl:
        rec = oplog.record
        return NodeServicesImpl(self.config, self.member, self.runtime, self.tool, oplog=oplog,
                                params=node_params_of(rec),
                                in_cluster=rec.header.get("kind") == KIND_CLUSTER,
                                rollback_requested=rollback_requested)

    def local_checks(self, params: RestoreParams, recorded: Optional[Recorded] = None,
                     force: bool = False) -> LocalChecks:
        return local_checks(self.config, self.member, self.ops, params, recorded=recorded, force=force)

    # -- opening ------------------------------------------------------------------------
    def open_operation(self, params: RestoreParams, kind: str = KIND_LOCAL, *, checks: Optional[LocalChecks] = None,
                       low_priority: bool = True) -> OpLog:
        """The operation's log: created now (after refusing while another operation is open), or the
        existing one of the same id when it restores the same snapshot."""
        op = self.ops.get(params.op)
        if op.exists():
            oplog = op.log()
            recorded = params_of(oplog.record)
            if recorded.snapshot_sha256 != params.snapshot_sha256:
                raise UnsafeRefusal(f"operation {params.op} was started with a different snapshot "
                                    f"(sha256 {recorded.snapshot_sha256[:16]}...); use a new operation id")
            return oplog
        for other in self.ops.summaries():
            if other.state is OpState.DAMAGED:
                raise UnsafeRefusal(f"refusing to start a restore: {other.error}")
            if other.open:
                raise UnsafeRefusal(f"operation {other.op} on this node is {other.state.value}; finish it "
                                    f"(restore --op {other.op} --yes) or roll it back first")
        flow = CLUSTER_RESTORE if kind == KIND_CLUSTER else NODE_RESTORE
        extra: dict[str, Any] = {"snapshot_fingerprint": fingerprint(Path(params.snapshot)),
                                 "low_priority": low_priority}
        if checks is not None:
            extra["checks"] = checks.to_json()
        oplog = op.create(kind=kind, flow=flow, params=params, **extra)
        if checks is not None and checks.forced:
            oplog.emit("forced", refusals=checks.forced)
        return oplog

    def open_member_operation(self, params: MemberParams, flow: Flow) -> OpLog:
        """An operation on this member that restores nothing (a replacement): created now, after refusing
        while another operation is open here, or the existing one of the same id."""
        op = self.ops.get(params.op)
        if op.exists():
            oplog = op.log()
            if flow_of(oplog.record) is not flow:
                raise UnsafeRefusal(f"operation {params.op} on this node is a {flow_of(oplog.record).name}, not a "
                                    f"{flow.name}; use a new operation id")
            return oplog
        self._refuse_other_operations()
        return op.create(kind=KIND_CLUSTER, flow=flow, params=params)

    def _refuse_other_operations(self) -> None:
        for other in self.ops.summaries():
            if other.state is OpState.DAMAGED:
                raise UnsafeRefusal(f"refusing to start an operation: {other.error}")
            if other.open:
                raise UnsafeRefusal(f"operation {other.op} on this node is {other.state.value}; finish it "
                                    f"(restore --op {other.op} --yes) or roll it back first")

    def reverify(self, oplog: OpLog, full: bool = True) -> list[str]:
        """Before a resumed operation runs any step: is its snapshot still the verified file?

        The recorded command must name the recorded absolute path, and the file
        must have the recorded size and sha256 (``full``), or at least the same
        inode, size and timestamps (otherwise it is hashed again). Once prepared,
        the file is no longer read, so a file that is gone is only noted.
        Raises UnsafeRefusal (nothing is done) on any mismatch.
        """
        rec = oplog.record
        if flow_of(rec).params is not RestoreParams:
            return []    # an operation that restores no snapshot has none to verify
        p = params_of(rec)
        prepared = rec.step_done("prepare") is not None
        undo = (f"Nothing was done. Put the verified file back, or undo the operation with "
                f"`etcdguard-agent rollback {rec.op}`")
        if not prepared:
            problems = argv_problems(p)
            if problems:
                raise UnsafeRefusal(f"operation {rec.op} cannot be resumed: {'; '.join(problems)}. {undo}")
        path = Path(p.snapshot)
        if not path.is_file():
            if prepared:
                return [f"{path} is gone; its data was already prepared"]
            raise UnsafeRefusal(f"operation {rec.op}: its snapshot {path} is gone. {undo}")
        if not full and rec.header.get("snapshot_fingerprint") == fingerprint(path):
            return [f"{path} unchanged since it was verified (inode, size, times)"]
        try:
            verify_file(path, p.snapshot_sha256, p.snapshot_size)
        except SnapshotCorrupt as exc:
            raise UnsafeRefusal(f"operation {rec.op}: {path} is no longer the snapshot it was started with "
                                f"({exc}). {undo}") from None
        return [f"{path} re-verified: sha256 {p.snapshot_sha256[:16]}..., {p.snapshot_size} bytes"]

    # -- one step ------------------------------------------------------------------------
    def run_step(self, oplog: OpLog, step: Step, **options: Any) -> dict[str, Any]:
        """Run ``step`` unless the journal records it done; return its (recorded) result."""
        done = oplog.record.step_done(step.name)
        if done is not None:
            self.progress(step.name, "already done (recorded)")
            return done.result if isinstance(done.result, dict) else {}
        oplog.emit("step", step=step.name, status=STARTED)
        self.progress(step.name, "running")
        try:
            result = step.execute(self.services(oplog), **options)
        except (EtcdguardError, OSError, subprocess.SubprocessError) as exc:
            oplog.emit("step", step=step.name, status=FAILED, error=str(exc))
            raise
        oplog.emit("step", step=step.name, status=DONE, result=result)
        self.progress(step.name, "done")
        return result

    def run_undo(self, oplog: OpLog, undo_name: str, *, rollback_requested: bool = False) -> dict[str, Any]:
        """Undo one step here (idempotent); the step's record is then dropped so a retry runs it again."""
        step = undone_step(undo_name)
        recorded = oplog.record.revert_steps.get((step.name, ""))
        if (recorded is not None and recorded.status == DONE and not oplog.record.step_started(step.name)
                and isinstance(recorded.result, dict)):
            return recorded.result
        oplog.emit("revert-step", step=step.name, status=STARTED)
        self.progress(undo_name, "running")
        try:
            result = step.undo(self.services(oplog, rollback_requested=rollback_requested))
        except (EtcdguardError, OSError, subprocess.SubprocessError) as exc:
            oplog.emit("revert-step", step=step.name, status=FAILED, error=str(exc))
            raise
        oplog.emit("revert-step", step=step.name, status=DONE, result=result)
        oplog.emit("forget", step=step.name)
        self.progress(undo_name, "done")
        return result

    def revert(self, oplog: OpLog, *, rollback_requested: bool = False) -> list[str]:
        """Undo every undoable step that started, newest first; then forget the rest, so a retry starts over.

        An undo that fails does not stop the others (each proves its own preconditions: the swap back
        proves etcd stopped), so as much as can be put back is; the failures are raised together."""
        flow = flow_of(oplog.record)
        notes: list[str] = []
        errors: list[str] = []
        for step in reversed(flow.steps):
            if step.undoable and oplog.record.step_started(step.name):
                try:
                    result = self.run_undo(oplog, step.undo_name, rollback_requested=rollback_requested)
                except (EtcdguardError, OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"{step.undo_name}: {exc}")
                    continue
                notes.append(f"{step.undo_name}: {_brief(result)}")
        if errors:
            raise EtcdguardError("; ".join(errors) + (f" (undone: {'; '.join(notes)})" if notes else ""))
        for step in flow.steps:
            if oplog.record.step_started(step.name):
                oplog.emit("forget", step=step.name)
        return notes

    # -- a node-local restore --------------------------------------------------------------
    def run(self, params: RestoreParams, *, recorded: Optional[Recorded] = None, force: bool = False) -> Outcome:
        """Every step in order; on failure undo as the flags say, then raise StepFailed.

        A new operation first passes the node-local checks; a resumed one first re-verifies
        its snapshot. Either refusal happens before any step runs.
        """
        with self.ops.exclusive(f"restore {params.op}"):
            op = self.ops.get(params.op)
            if op.exists():
                existing = op.log()
                for note in self.reverify(existing, full=True):
                    self.progress("resume", note)
                oplog = self.open_operation(params)
                if oplog.record.state in (OpState.FAILED, OpState.NEEDS_ATTENTION):
                    oplog.set_state(OpState.RUNNING, why="resumed", clear_error=True)
            else:
                checks = self.local_checks(params, recorded, force)
                if checks.refusals:
                    raise UnsafeRefusal("; ".join(checks.refusals) + ". Nothing was changed")
                oplog = self.open_operation(params, checks=checks, low_priority=False)
            if oplog.record.state is not OpState.RUNNING:
                raise UnsafeRefusal(f"operation {params.op} is {oplog.record.state.value}; it cannot run again "
                                    "(a new restore needs a new operation id)")
            results = []
            for step in flow_of(oplog.record).steps:
                try:
                    results.append({"step": step.name, **self.run_step(oplog, step)})
                except (EtcdguardError, OSError, subprocess.SubprocessError) as exc:
                    raise self.recover(oplog, step, exc) from exc
            oplog.set_state(OpState.DONE)
            return Outcome(params.op, True, "done", results)

    def recover(self, oplog: OpLog, step: Step, exc: BaseException) -> StepFailed:
        """After ``step`` failed: undo what is safe to undo, record how it ended, say so."""
        code = exc.exit_code if isinstance(exc, EtcdguardError) else 1
        if step.clients_see:
            oplog.set_state(OpState.NEEDS_ATTENTION, error=str(exc), failed_phase=step.name)
            return StepFailed(step.name, f"step {step.name} failed: {exc}; the data is restored and clients may "
                                         "have seen it, so nothing was undone: fix what it names and run the "
                                         "restore again with the same --op", code)
        oplog.set_state(OpState.ROLLING_BACK, error=str(exc), failed_phase=step.name)
        try:
            notes = self.revert(oplog)
        except (EtcdguardError, OSError, subprocess.SubprocessError) as undo_exc:
            oplog.set_state(OpState.NEEDS_ATTENTION, error=str(exc), failed_phase=step.name,
                            undo_error=str(undo_exc))
            return StepFailed(step.name, f"step {step.name} failed: {exc}; undoing it ALSO failed: {undo_exc}. "
                                         f"Look at {oplog.path}", 1)
        oplog.set_state(OpState.FAILED, error=str(exc), failed_phase=step.name)
        return StepFailed(step.name, f"step {step.name} failed: {exc}; undone: "
                                     f"{'; '.join(notes) or 'nothing to undo'}", code)

    def backwards_risk(self, oplog: OpLog) -> Optional[str]:
        """Why rolling back sends revisions backwards, or None while no client saw its data."""
        rec = oplog.record
        flow = flow_of(rec)
        if not any(s.clients_see and rec.step_started(s.name) for s in flow.steps):
            return None
        verified = rec.step_done("verify")
        revision = verified.result.get("revision") if verified is not None and isinstance(verified.result,
                                                                                          dict) else None
        upto = f" (revision {revision:,} or later)" if isinstance(revision, int) else ""
        return (f"restore {rec.op} was unfenced: kube-apiserver and its clients may have seen the restored "
                f"revisions{upto}. Rolling back puts the older data back, so revisions go backwards: "
                "Kubernetes watch caches and informers may miss changes or serve stale objects until "
                "every client re-lists. A forward restore (a newer snapshot, restored with a revision bump) "
                "avoids this")

    def rollback(self, op_id: str, *, backwards_ok: bool = False) -> Outcome:
        """Put the pre-restore data back for an operation (after unfence only with ``backwards_ok``)."""
        with self.ops.exclusive(f"roll back {op_id}"):
            oplog = self.ops.get(op_id).log()   # nothing is undone on a guess of what a damaged journal said
            if oplog.record.state is OpState.ROLLED_BACK:
                return Outcome(op_id, True, "rolled-back", [])
            risk = self.backwards_risk(oplog)
            if risk is not None and not backwards_ok:
                raise UnsafeRefusal(f"{risk}. Nothing was changed; to roll back anyway run "
                                    f"`etcdguard-agent rollback {op_id} --yes`")
            if risk is not None:
                oplog.emit("rollback-backwards-confirmed", risk=risk)
            if oplog.record.state is not OpState.ROLLING_BACK:
                oplog.set_state(OpState.ROLLING_BACK, why="rollback requested")
            notes = self.revert(oplog, rollback_requested=True)
            notes += self._running_again(oplog)
            oplog.set_state(OpState.ROLLED_BACK)
            return Outcome(op_id, True, "rolled-back", [{"step": "rollback", "notes": notes}])

    def _running_again(self, oplog: OpLog) -> list[str]:
        """After a node-local rollback: etcd and kube-apiserver run here (a step that never ran left them)."""
        if oplog.record.header.get("kind") == KIND_CLUSTER:
            return []
        services = self.services(oplog)
        notes = []
        if not services.etcd.is_running():
            services.etcd.start(services.start_timeout)
            notes.append("etcd started")
        services.wait_healthy()
        if services.apiserver is not None and not services.apiserver.is_running():
            services.apiserver.start(services.start_timeout)
            notes.append(f"kube-apiserver {services.wait_apiserver()}")
        return notes

    def finish(self, oplog: OpLog, outcome: str) -> dict[str, Any]:
        """Close an operation a coordinator ran (done, failed or rolled back): backups resume here."""
        if oplog.record.state is OpState.RUNNING:
            oplog.set_state(OpState(outcome), why="closed by the coordinator")
        return {"op": oplog.op, "state": oplog.record.state.value}

    def cleanup(self, op_id: str) -> list[str]:
        """Delete an operation's kept data (only when the operator asks)."""
        with self.ops.exclusive(f"clean up {op_id}"):
            oplog = self.ops.get(op_id).log()
            if oplog.record.state not in FINAL:
                raise UnsafeRefusal(f"operation {op_id} is {oplog.record.state.value}; clean up only finished "
                                    "operations")
            p = node_params_of(oplog.record)
            removed = []
            for path in swap.kept_paths(Path(p.data_dir), op_id, Path(p.wal_dir) if p.wal_dir else None):
                shutil.rmtree(path)
                removed.append(str(path))
            oplog.emit("cleaned", removed=removed)
            return removed



def _brief(result: dict[str, Any]) -> str:
    parts = []
    for key, value in result.items():
        if isinstance(value, list):
            parts += [str(v) for v in value]
        elif value not in (None, "", []):
            parts.append(f"{key} {value}")
    return ", ".join(parts) or "nothing to undo"
