"""Restore steps requested over the control channel, for a cluster-wide restore.

The coordinator runs a restore as numbered steps on every member; each
``restore.step`` request runs one step here through NodeRestorer, which
records the step's result in the agent's state dir before answering. A
repeated (op_id, step) therefore returns the recorded result and never acts
twice, also across agent restarts.

Rules this module adds for remote steps:
- the operation record (``kind = "cluster"``) is created by ``prepare``,
  which carries the parameters; ``preflight`` before that only checks what
  needs no snapshot;
- a step runs only after every earlier step of the plan finished here; an
  undo step (``undo-<step>``) may run at any time while the operation is
  open, and ``finish`` closes it (done, failed or rolled back);
- ``start`` does not wait for health: a member of a cluster becomes healthy
  only once a quorum runs, which the coordinator waits for;
- ``prepare`` repeated with other parameters is a conflict, as is any new
  step in an operation that is no longer running;
- every member must bump the revision by exactly the planned amount, so the
  planned ``bump_revision`` is used as given;
- each step holds the node's restore lock while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.control.transfer import NotFound
from etcdguard.agent.restore.journal import DAMAGED, OPEN_STATES, DamagedRecord, Operation, OperationStore
from etcdguard.agent.restore.plan import RestoreParams
from etcdguard.agent.restore.steps import NodeRestorer, catalog_record, kept_dirs
from etcdguard.agent.runtime.factory import make_runtime
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError, ToolError, UnsafeRefusal
from etcdguard.common.ops import phases as ph
from etcdguard.common.wire.protocol import CONFLICT, ProtocolError

log = logging.getLogger(__name__)
# OPEN_STATES is defined with the records (journal.py) and read by the control server from here.
__all__ = ["OPEN_STATES", "RemoteRestore", "operation_status", "restore_active", "snapshot_in_use"]

JOURNAL_TAIL = 20


def restore_active(state_dir: Path) -> bool:
    """A restore holds the lock now, an operation is still running (between its steps), or a record
    cannot be read: that may be a running restore, so backups wait as if it were."""
    ops = OperationStore(state_dir)
    if ops.locked():
        return True
    return any(o.record().get("state") in ("running", "damaged") for o in ops.all())


def snapshot_in_use(state_dir: Path, path: Path) -> bool:
    """Does an operation that is not finished restore from this file?"""
    resolved = str(path.resolve())
    for op in OperationStore(state_dir).all():
        record = op.record()
        if record.get("state") == DAMAGED:
            return True   # it may restore from this file: keep it
        if record.get("state") in OPEN_STATES and record.get("params", {}).get("snapshot") == resolved:
            return True
    return False


def operation_status(state_dir: Path, op_id: str) -> dict[str, Any]:
    """restore.status: the operation's state, each finished step's result, the journal's tail."""
    op = OperationStore(state_dir).get(op_id)
    if not op.exists():
        raise NotFound(f"no operation {op_id!r} on this node")
    record = op.record()
    steps: dict[str, Any] = {}
    for step in (*ph.AGENT_STEPS, *ph.UNDO_STEPS):
        try:
            done = op.finished(step)
        except DamagedRecord as exc:
            steps[step] = {"damaged": str(exc)}
            continue
        if done is not None:
            steps[step] = done.result
    params = record.get("params") or {}
    kept = kept_dirs(Path(params.get("data_dir") or "/nonexistent"), op_id,
                     Path(params["wal_dir"]) if params.get("wal_dir") else None)
    return {"op": op_id, "state": record.get("state"), "kind": record.get("kind"),
            "failed_step": record.get("failed_step"), "error": record.get("error"),
            "steps": steps, "kept": [{"path": p, "bytes": b} for p, b in kept],
            "journal_tail": op.journal_lines()[-JOURNAL_TAIL:]}


class RemoteRestore:
    """Runs restore.step requests. Used from one thread (the server's long-op worker)."""

    def __init__(self, runner: Callable[[], BackupRunner], snapshot_path: Callable[[str], Path]) -> None:
        self._runner = runner
        self._snapshot_path = snapshot_path
        self._restorer: Optional[tuple[int, NodeRestorer]] = None

    def restorer(self) -> NodeRestorer:
        """The NodeRestorer for the daemon's current configuration (rebuilt after a reload)."""
        runner: BackupRunner = self._runner()
        if self._restorer is not None and self._restorer[0] == id(runner):
            return self._restorer[1]
        tool = runner.tool()
        if tool is None:
            raise ToolError("no etcdutl or etcdctl found on this node (set etcd.restore_tool); cannot restore")
        config = runner.config
        runtime = make_runtime(config, runner.member, config.state.dir)

        def progress(step: str, message: str) -> None:
            log.info("restore step %s: %s", step, message)

        restorer = NodeRestorer(config, runner.member, runtime, tool, progress)
        self._restorer = (id(runner), restorer)
        return restorer

    def step(self, args: dict[str, Any], who: str) -> dict[str, Any]:
        """Run (or answer from the record) one restore.step; ``who`` names the requester for the journal."""
        op_id, step = args["op_id"], args["step"]
        restorer = self.restorer()
        op = restorer.ops.get(op_id)   # a handle by id: it sees the operation once prepare creates it
        try:
            if step in ("rollback", "cleanup", "finish"):
                return self._closing_step(restorer, op, step, args)
            with restorer.ops.exclusive(f"run restore step {step} of {op_id}"):
                return self._locked_step(restorer, op, step, args, who)
        except subprocess.SubprocessError as exc:
            self._journal_failure(op, step, exc, who)
            raise ToolError(f"restore step {step}: {exc}") from None
        except (EtcdguardError, OSError) as exc:
            if not isinstance(exc, (NotFound, ProtocolError)):
                self._journal_failure(op, step, exc, who)
            raise

    def _closing_step(self, restorer: NodeRestorer, op: Operation, step: str, args: dict[str, Any]) -> dict[str, Any]:
        """rollback, cleanup and finish: they take the node's lock themselves, or no lock."""
        if step == "rollback":
            return self._rollback(restorer, op)
        if not op.exists():
            raise NotFound(f"no operation {op.op!r} on this node")
        if step == "cleanup":
            return {"op": op.op, "removed": restorer.cleanup(op.op)}
        with restorer.ops.exclusive(f"close {op.op}"):
            return restorer.finish(op, args["params"]["outcome"])

    def _locked_step(self, restorer: NodeRestorer, op: Operation, step: str, args: dict[str, Any],
                     who: str) -> dict[str, Any]:
        """A forward or undo step, with the node's lock held."""
        if not op.exists():
            if step == "preflight":
                return self._preflight_without_operation(restorer)
            if step != "prepare":
                raise NotFound(f"no operation {op.op!r} on this node (it is created by its prepare step)")
            op = self._open(restorer, op.op, args["params"], who)
            opened = True
        else:
            opened = False
            recorded = self._known_operation(restorer, op, step, args)
            if recorded is not None:
                return recorded
        if step in ph.UNDO_STEPS:
            return restorer.run_step(op, step)
        self._check_order(op, step)
        if step == "prepare":
            # Opened by this very request, its snapshot was verified in full moments ago
            # (make_params): the preflight need not hash it again while it is unchanged.
            pre = restorer.run_step(op, "preflight", just_verified=opened)
            return {**restorer.run_step(op, "prepare"), "preflight": pre}
        if step == ph.START:
            return restorer.run_step(op, step, wait=False)   # quorum is the coordinator's to wait for
        return restorer.run_step(op, step)

    def _known_operation(self, restorer: NodeRestorer, op: Operation, step: str,
                         args: dict[str, Any]) -> Optional[dict[str, Any]]:
        """A step of an operation created earlier: the recorded answer of a closed one, else None once
        the operation's snapshot is proven to be the verified file still."""
        state = op.record().get("state")
        if state != "running":
            # A finished step answers with its record; nothing new runs in a closed operation.
            recorded = self._recorded(op, step)
            if recorded is None:
                raise ProtocolError(CONFLICT, f"operation {op.op} is {state}; step {step} cannot "
                                              "run in it (a new restore needs a new operation id)")
            return recorded
        if step == "prepare":
            self._check_same_prepare(restorer, op, args["params"])
        # A retry, or a step after an agent restart: its snapshot must still be the verified file.
        for note in restorer.reverify(op, full=op.finished("prepare") is None):
            log.info("restore %s: %s", op.op, note)
        return None

    @staticmethod
    def _recorded(op: Operation, step: str) -> Optional[dict[str, Any]]:
        done = op.finished(step)
        if done is None:
            return None
        if step == "prepare":
            pre = op.finished("preflight")
            return {**done.result, "preflight": pre.result if pre is not None else None}
        return done.result

    @staticmethod
    def _journal_failure(op: Operation, step: str, exc: BaseException, who: str) -> None:
        if op.exists():
            with contextlib.suppress(OSError):
                op.journal("failed", step=step, error=str(exc), by=who)

    @staticmethod
    def _check_order(op: Operation, step: str) -> None:
        """A step runs only after every step before it in the plan is recorded as finished."""
        for earlier in ph.AGENT_STEPS[: ph.AGENT_STEPS.index(step)]:
            if earlier == "preflight" and step == "prepare":
                continue   # prepare runs it first
            if op.finished(earlier) is None:
                raise UnsafeRefusal(f"operation {op.op}: step {step} needs step {earlier} finished first "
                                    "on this node")

    @staticmethod
    def _preflight_without_operation(restorer: NodeRestorer) -> dict[str, Any]:
        """Checks that need no snapshot yet (the operation is created by prepare); nothing is recorded."""
        data_dir = restorer.member.data_dir
        if not data_dir.is_dir():
            raise UnsafeRefusal(f"data dir {data_dir} does not exist")
        if not restorer.tool.path.exists():
            raise ToolError(f"restore tool {restorer.tool.path} is gone")
        return {"recorded": False, "free_bytes": fsutil.free_bytes(data_dir),
                "live_member": (data_dir / "member").is_dir(), "member": restorer.member.name,
                "tool": {"path": str(restorer.tool.path), "version": restorer.tool.version,
                         "supports_bump": restorer.tool.supports_bump}}

    def _open(self, restorer: NodeRestorer, op_id: str, params: dict[str, Any], who: str) -> Operation:
        member = restorer.member
        if params["name"] != member.name:
            raise UnsafeRefusal(f"this agent serves member {member.name!r}, not {params['name']!r}; "
                                "check the coordinator's member list")
        bump = params["bump_revision"]
        if bump > 0 and not restorer.tool.supports_bump:
            raise UnsafeRefusal(f"{restorer.tool.kind} {restorer.tool.version} cannot --bump-revision; "
                                "plan the restore with bump_revision = 0 on every member")
        snapshot = self._snapshot_path(params["snapshot"])
        # A cluster needs the same bump on every member: the planned one is used as given.
        p = restorer.make_params(snapshot, op_id, initial_cluster=params["initial_cluster"],
                                 token=params["token"], peer_url=params["peer_url"], bump_revision=bump,
                                 exact_bump=True, recorded=catalog_record(snapshot))
        op = restorer.open_operation(p, kind="cluster")
        op.journal("requested", by=who)
        return op

    @staticmethod
    def _check_same_prepare(restorer: NodeRestorer, op: Operation, params: dict[str, Any]) -> None:
        p: RestoreParams = restorer.params_of(op)
        planned = {"snapshot": Path(p.snapshot).name, "name": p.name, "initial_cluster": p.initial_cluster,
                   "token": p.token, "peer_url": p.peer_url, "bump_revision": p.bump_revision}
        differs = sorted(k for k, v in planned.items() if params.get(k) != v)
        if differs:
            raise ProtocolError(CONFLICT, f"operation {op.op} was prepared with other {', '.join(differs)}; "
                                          "use a new operation id")

    @staticmethod
    def _rollback(restorer: NodeRestorer, op: Operation) -> dict[str, Any]:
        """Put this node back as it was: swap the old data back, or undo what ran before the swap."""
        if not op.exists():
            raise NotFound(f"no operation {op.op!r} on this node")
        if op.finished("swap") is not None or op.record().get("state") == "rolled-back":
            # The coordinator decides whether a cluster may go back after unfence (design.md section 3:
            # it restores forward instead); the agent's own --yes guard is for `etcdguard-agent rollback`.
            return restorer.rollback(op.op, backwards_ok=True).to_json()
        with restorer.ops.exclusive(f"roll back {op.op}"):
            notes = restorer.undo_before_swap(op)
            op.update(state="rolled-back", rolled_back_at=time.time())
        return {"op": op.op, "ok": True, "state": "rolled-back", "steps": [{"step": "rollback", "notes": notes}],
                "error": None, "failed_step": None}
