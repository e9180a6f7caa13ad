"""Steps requested over the control channel: this node's part of an operation the coordinator runs.

The coordinator runs an operation as steps on every member; each
``restore.step`` request runs one step here through the node engine, which
records the step's result in the operation's journal before answering. A
repeated (op_id, step) therefore returns the recorded result and never acts
twice, also across agent restarts.

Rules this module adds for remote steps (all read from the step registry's
flags, none from step names):

- the step whose parameters open the operation (``opens``) creates it, then
  runs the flow's steps before it here first; a step before that only checks
  what needs no operation;
- a step runs only after every earlier agent step of the flow finished here;
  an undo step may run at any time while the operation is open, and
  ``finish`` closes it (done, failed or rolled back);
- the opening step repeated with other parameters is a conflict, as is any new
  step in an operation that is no longer running;
- every member bumps the revision by exactly the planned amount;
- each step holds the node's restore lock while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.control.transfer import NotFound
from etcdguard.agent.restore.engine import NodeEngine
from etcdguard.agent.restore.node import fingerprint, kept_dirs
from etcdguard.agent.restore.opening import VerifiedCopy, catalog_record, make_params
from etcdguard.agent.restore.records import (
    KIND_CLUSTER,
    NodeOperation,
    OperationStore,
    flow_of,
    node_params_of,
    params_of,
)
from etcdguard.agent.restore.warm import prepare_warm
from etcdguard.agent.runtime.factory import make_runtime
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError, ToolError, UnsafeRefusal
from etcdguard.common.journal import JournalDamaged
from etcdguard.common.ops.flows import ACTIONS, CLUSTER_RESTORE, FLOWS, STEPS, UNDO_STEPS, Flow
from etcdguard.common.ops.params import MemberParams, RestoreParams
from etcdguard.common.ops.record import OpLog
from etcdguard.common.ops.states import OpState
from etcdguard.common.ops.step import Step
from etcdguard.common.wire.protocol import BAD_REQUEST, CONFLICT, ProtocolError

log = logging.getLogger(__name__)

JOURNAL_TAIL = 20
# What a coordinator that lost its own journal needs to take an operation over (no secrets, no paths to run).
ADOPTABLE = ("snapshot_sha256", "snapshot_size", "snapshot_revision", "name", "peer_url", "initial_cluster", "token",
             "bump_revision", "data_dir", "wal_dir", "live_cluster_id")


def operation_status(state_dir: Path, op_id: str) -> dict[str, Any]:
    """restore.status: the operation's state, each finished step's result, the journal's tail."""
    op = OperationStore(state_dir).get(op_id)
    if not op.exists():
        raise NotFound(f"no operation {op_id!r} on this node")
    summary = op.summary()
    steps: dict[str, Any] = {}
    started: list[str] = []
    params: dict[str, Any] = summary.params
    with contextlib.suppress(JournalDamaged):
        rec = op.log().record
        steps = {name: status.result for (name, _), status in rec.steps.items() if status.status == "done"}
        steps.update({f"undo-{name}": status.result for (name, _), status in rec.revert_steps.items()
                      if status.status == "done"})
        started = [name for (name, _) in rec.steps]
    kept = kept_dirs(Path(params.get("data_dir") or "/nonexistent"), op_id,
                     Path(params["wal_dir"]) if params.get("wal_dir") else None)
    return {"op": op_id, "state": summary.state.value, "kind": summary.kind,
            "failed_step": summary.failed_step, "error": summary.error,
            "steps": steps, "started": started, "kept": [{"path": p, "bytes": b} for p, b in kept],
            "params": {k: params.get(k) for k in ADOPTABLE if k in params},
            "journal_tail": op.journal_tail(JOURNAL_TAIL)}


class RemoteRestore:
    """Runs restore.step requests. Used from one thread (the server's long-op worker)."""

    def __init__(self, runner: Callable[[], BackupRunner], snapshot_path: Callable[[str], Path],
                 verified_fingerprint: Callable[[Path], Optional[list[int]]] = lambda path: None) -> None:
        self._runner = runner
        self._snapshot_path = snapshot_path
        self._verified_fingerprint = verified_fingerprint
        self._engine: Optional[tuple[int, NodeEngine]] = None

    def engine(self) -> NodeEngine:
        """The engine for the daemon's current configuration (rebuilt after a reload)."""
        runner: BackupRunner = self._runner()
        if self._engine is not None and self._engine[0] == id(runner):
            return self._engine[1]
        tool = runner.tool()
        if tool is None:
            raise ToolError("no etcdutl or etcdctl found on this node (set etcd.restore_tool); cannot restore")
        config = runner.config
        runtime = make_runtime(config, runner.member, config.state.dir)

        def progress(step: str, message: str) -> None:
            log.info("restore step %s: %s", step, message)

        engine = NodeEngine(config, runner.member, runtime, tool, progress)
        self._engine = (id(runner), engine)
        return engine

    def step(self, args: dict[str, Any], who: str) -> dict[str, Any]:
        """Run (or answer from the record) one restore.step; ``who`` names the requester for the journal."""
        op_id, name = args["op_id"], args["step"]
        flow = FLOWS[args.get("flow") or CLUSTER_RESTORE.name]
        engine = self.engine()
        op = engine.ops.get(op_id)   # a handle by id: it sees the operation once its opening step creates it
        try:
            if name in ACTIONS:
                return self._action(engine, op, name, args)
            with engine.ops.exclusive(f"run {flow.name} step {name} of {op_id}"):
                return self._locked_step(engine, op, name, args, who=who, flow=flow)
        except subprocess.SubprocessError as exc:
            raise ToolError(f"restore step {name}: {exc}") from None

    def _action(self, engine: NodeEngine, op: NodeOperation, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """rollback, cleanup and finish: they take the node's lock themselves."""
        if not op.exists():
            raise NotFound(f"no operation {op.op!r} on this node")
        if name == "rollback":
            # The coordinator decides whether a cluster may go back after unfence (design.md section 3:
            # it restores forward instead); the agent's own --yes guard is for `etcdguard-agent rollback`.
            return engine.rollback(op.op, backwards_ok=True).to_json()
        if name == "cleanup":
            return {"op": op.op, "removed": engine.cleanup(op.op)}
        with engine.ops.exclusive(f"close {op.op}"):
            return engine.finish(op.log(), args["params"]["outcome"])

    def _locked_step(self, engine: NodeEngine, op: NodeOperation, name: str, args: dict[str, Any], *,
                     who: str, flow: Flow) -> dict[str, Any]:
        """A forward or undo step, with the node's lock held."""
        if name in UNDO_STEPS:
            if not op.exists():
                raise NotFound(f"no operation {op.op!r} on this node")
            return engine.run_undo(op.log(), name)
        if not flow.has(name):
            raise ProtocolError(BAD_REQUEST, f"a {flow.name} has no step {name!r} (its steps: {', '.join(flow.names)})")
        step = STEPS[name]
        if not op.exists():
            if not step.opens:
                if not any(s.opens for s in flow.before(name)):
                    return self._checks_without_operation(engine)
                raise NotFound(f"no operation {op.op!r} on this node (it is created by its opening step)")
            oplog = self._open(engine, op.op, args["params"], who, flow)
            self._run_earlier(engine, oplog, step)
            return self._run(engine, oplog, step, who)
        oplog = op.log()
        recorded = self._known_operation(engine, oplog, step, args, flow)
        if recorded is not None:
            return recorded
        if step.opens:
            # An agent stopped between opening the operation and finishing the steps before the opening one
            # (its snapshot was verified again just now): finish them first, as the first request does.
            self._run_earlier(engine, oplog, step)
        self._check_order(oplog, step)
        return self._run(engine, oplog, step, who, args.get("params") or {})

    @staticmethod
    def _run_earlier(engine: NodeEngine, oplog: OpLog, step: Step) -> None:
        """The agent steps of the flow before the opening ``step`` not yet recorded as done (its snapshot was
        verified just before); run_step answers a recorded one from its record."""
        for earlier in flow_of(oplog.record).before(step.name):
            if earlier.on_agent:
                engine.run_step(oplog, earlier, just_verified=True)

    def _run(self, engine: NodeEngine, oplog: OpLog, step: Step, who: str,
             params: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Run ``step``; the parameters of a step that does not open the operation are its options."""
        try:
            result = engine.run_step(oplog, step, **(params or {}))
        except (EtcdguardError, OSError) as exc:
            with contextlib.suppress(EtcdguardError, OSError):
                oplog.emit("failed-request", step=step.name, error=str(exc), by=who)
            raise
        if step.opens:
            return {**result, **self._earlier_results(oplog, step)}
        return result

    @staticmethod
    def _earlier_results(oplog: OpLog, step: Step) -> dict[str, Any]:
        """The results of the steps the opening step ran first (preflight), under their names."""
        out: dict[str, Any] = {}
        for earlier in flow_of(oplog.record).before(step.name):
            done = oplog.record.step_done(earlier.name)
            if earlier.on_agent:
                out[earlier.name] = done.result if done is not None else None
        return out

    def _known_operation(self, engine: NodeEngine, oplog: OpLog, step: Step,
                         args: dict[str, Any], flow: Flow) -> Optional[dict[str, Any]]:
        """A step of an operation created earlier: the recorded answer of a closed one, else None once
        the operation's snapshot is proven to be the verified file still."""
        rec = oplog.record
        if flow_of(rec) is not flow:
            raise ProtocolError(CONFLICT, f"operation {rec.op} on this node is a {flow_of(rec).name}, not a "
                                          f"{flow.name}")
        if rec.state is not OpState.RUNNING:
            # A finished step answers with its record; nothing new runs in a closed operation.
            done = rec.step_done(step.name)
            if done is None:
                raise ProtocolError(CONFLICT, f"operation {rec.op} is {rec.state.value}; step {step.name} cannot "
                                              "run in it (a new restore needs a new operation id)")
            result = done.result if isinstance(done.result, dict) else {}
            return {**result, **self._earlier_results(oplog, step)} if step.opens else result
        if step.opens:
            self._check_same_opening(oplog, args["params"])
        # A retry, or a step after an agent restart: its snapshot must still be the verified file.
        for note in engine.reverify(oplog, full=rec.step_done("prepare") is None):
            log.info("restore %s: %s", rec.op, note)
        return None

    @staticmethod
    def _check_order(oplog: OpLog, step: Step) -> None:
        """A step runs only after every agent step before it in the flow is recorded as finished."""
        for earlier in flow_of(oplog.record).before(step.name):
            if earlier.on_agent and oplog.record.step_done(earlier.name) is None:
                raise UnsafeRefusal(f"operation {oplog.op}: step {step.name} needs step {earlier.name} finished "
                                    "first on this node")

    @staticmethod
    def _checks_without_operation(engine: NodeEngine) -> dict[str, Any]:
        """Checks that need no snapshot yet (the operation is created by its opening step); nothing is recorded."""
        data_dir = engine.member.data_dir
        if not data_dir.is_dir():
            raise UnsafeRefusal(f"data dir {data_dir} does not exist")
        if not engine.tool.path.exists():
            raise ToolError(f"restore tool {engine.tool.path} is gone")
        return {"recorded": False, "free_bytes": fsutil.free_bytes(data_dir),
                "live_member": (data_dir / "member").is_dir(), "member": engine.member.name,
                "tool": {"path": str(engine.tool.path), "version": engine.tool.version,
                         "supports_bump": engine.tool.supports_bump}}

    def _open(self, engine: NodeEngine, op_id: str, params: dict[str, Any], who: str, flow: Flow) -> OpLog:
        member = engine.member
        if params["name"] != member.name:
            raise UnsafeRefusal(f"this agent serves member {member.name!r}, not {params['name']!r}; "
                                "check the coordinator's member list")
        if flow.params is not RestoreParams:
            return self._open_member(engine, op_id, params, who, flow)
        bump = params["bump_revision"]
        if bump > 0 and not engine.tool.supports_bump:
            raise UnsafeRefusal(f"{engine.tool.kind} {engine.tool.version} cannot --bump-revision; "
                                "plan the restore with bump_revision = 0 on every member")
        snapshot = self._snapshot_path(params["snapshot"])
        # A cluster needs the same bump on every member: the planned one is used as given.
        p = make_params(engine.config, member, engine.tool, snapshot, op_id,
                        initial_cluster=params["initial_cluster"], token=params["token"],
                        peer_url=params["peer_url"], bump_revision=bump, exact_bump=True,
                        recorded=catalog_record(snapshot), expect_sha256=params.get("sha256"),
                        verified=self._verified_copy(snapshot, params))
        oplog = engine.open_operation(p, KIND_CLUSTER, low_priority=params.get("priority", "low") == "low")
        oplog.emit("requested", by=who)
        return oplog

    def warm(self, args: dict[str, Any]) -> dict[str, Any]:
        """restore.warm: restore a snapshot ahead into the warm standby area (warm.py); nothing live is touched."""
        engine = self.engine()
        member = engine.member
        if args["name"] != member.name:
            raise UnsafeRefusal(f"this agent serves member {member.name!r}, not {args['name']!r}")
        snapshot = self._snapshot_path(args["snapshot"])
        p = make_params(engine.config, member, engine.tool, snapshot, "warm", initial_cluster=args["initial_cluster"],
                        token=args["token"], peer_url=args["peer_url"], bump_revision=args["bump_revision"],
                        exact_bump=True, recorded=catalog_record(snapshot), expect_sha256=args["sha256"],
                        verified=self._verified_copy(snapshot, args))
        return prepare_warm(p, engine.tool)

    @staticmethod
    def _open_member(engine: NodeEngine, op_id: str, params: dict[str, Any], who: str, flow: Flow) -> OpLog:
        """An operation on this member that restores nothing (a replacement), opened with its name and peer URL."""
        member = engine.member
        if member.peer_url and params["peer_url"] != member.peer_url:
            raise UnsafeRefusal(f"this agent's etcd member {member.name} joins with peer URL {member.peer_url}, not "
                                f"{params['peer_url']}; set etcd.peer_url in its config, or give that URL")
        p = MemberParams(op=op_id, name=member.name, peer_url=params["peer_url"],
                         data_dir=os.path.abspath(member.data_dir),
                         wal_dir=os.path.abspath(member.wal_dir) if member.wal_dir else "")
        oplog = engine.open_member_operation(p, flow)
        oplog.emit("requested", by=who)
        return oplog

    def _verified_copy(self, snapshot: Path, params: dict[str, Any]) -> Optional[VerifiedCopy]:
        """A staged copy verified when it arrived (sha256 and trailer) and unchanged since (its inode, size
        and times): the vault's sha256 and revision are taken for it without reading it again (seconds on a
        large snapshot, while the cluster may be down). Anything else is verified in full."""
        sha, revision = params.get("sha256"), params.get("revision")
        if not isinstance(sha, str) or not isinstance(revision, int):
            return None
        recorded = self._verified_fingerprint(snapshot)
        if recorded is None or recorded != fingerprint(snapshot):
            return None
        staged = catalog_record(snapshot)
        if staged is None or staged.sha256 != sha:
            return None
        return VerifiedCopy(sha, staged.size, revision)

    @staticmethod
    def _check_same_opening(oplog: OpLog, params: dict[str, Any]) -> None:
        if flow_of(oplog.record).params is not RestoreParams:
            recorded = node_params_of(oplog.record)
            if (params.get("name"), params.get("peer_url")) != (recorded.name, recorded.peer_url):
                raise ProtocolError(CONFLICT, f"operation {oplog.op} was opened for {recorded.name} at "
                                              f"{recorded.peer_url}; use a new operation id")
            return
        p = params_of(oplog.record)
        planned = {"snapshot": Path(p.snapshot).name, "name": p.name, "initial_cluster": p.initial_cluster,
                   "token": p.token, "peer_url": p.peer_url, "bump_revision": p.bump_revision}
        differs = sorted(k for k, v in planned.items() if params.get(k) != v)
        if params.get("sha256") not in (None, p.snapshot_sha256):
            differs.append("sha256")
        if differs:
            raise ProtocolError(CONFLICT, f"operation {oplog.op} was prepared with other {', '.join(differs)}; "
                                          "use a new operation id")
