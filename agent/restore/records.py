"""This node's operations on disk: one journal per operation, its state rebuilt from the journal.

Layout: ``<state>/operations/<op>/journal.jsonl``, written only by appending
(common/journal.py) and read back through the one reducer
(common/ops/record.py) with the node transitions table: the header
(``created``: kind, flow, parameters, the snapshot's fingerprint, the checks)
then every step's start and result, undo and state change. A finished step's
result is in the journal before the next step starts, so a retried step
answers from it instead of acting twice, also across agent restarts.

A journal that cannot be read never takes the daemon down: the operation
reads as ``damaged`` with the reason, and every reader treats it as an open
operation (backups and restores stay blocked here) until the operator moves
it aside. Operations recorded by an older etcdguard (``op.json`` plus
``steps/``) are converted to a journal once, the old files kept beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.journal import (
    JOURNAL,
    JournalDamaged,
    JournalFile,
    check_op_id,
    exclusive_lock,
    is_locked,
    operation_dirs,
)
from etcdguard.common.ops import states
from etcdguard.common.ops.flows import CLUSTER_RESTORE, FLOWS, NODE_RESTORE, Flow
from etcdguard.common.ops.params import MemberParams, NodeParams, RestoreParams
from etcdguard.common.ops.record import OpLog, OpRecord
from etcdguard.common.ops.states import OpState

log = logging.getLogger(__name__)

OPERATIONS = "operations"
LOCK = "restore.lock"
KIND_LOCAL, KIND_CLUSTER = "local", "cluster"
LEGACY_RECORD = "op.json"


@dataclass(frozen=True)
class OperationSummary:
    """An operation as readers report it (``damaged`` when its journal cannot be read)."""

    op: str
    state: OpState
    kind: Optional[str] = None
    created_at: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    failed_step: Optional[str] = None

    @property
    def open(self) -> bool:
        return self.state in states.OPEN

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "state": self.state.value, "kind": self.kind, "created_at": self.created_at,
                "snapshot": self.params.get("snapshot"), "failed_step": self.failed_step, "error": self.error}


class NodeOperation:
    """One operation's directory and journal."""

    def __init__(self, root: Path, op: str) -> None:
        self.op = check_op_id(op)
        self.dir = root / op
        self.journal = JournalFile(self.dir / JOURNAL)

    def exists(self) -> bool:
        try:
            return self.journal.exists() or (self.dir / LEGACY_RECORD).exists()
        except OSError as exc:
            raise fsutil.disk_error(f"cannot look for operation {self.op}", exc) from None

    def create(self, *, kind: str, flow: Flow, params: NodeParams, **fields: Any) -> OpLog:
        fsutil.ensure_private_dir(self.dir.parent)
        fsutil.ensure_private_dir(self.dir)
        return OpLog.create(self.journal.path, self.op, "created", states.NODE, kind=kind, flow=flow.name,
                            params=params.to_json(), **fields)

    def log(self) -> OpLog:
        """The operation's journal, replayed; UsageError if there is none, JournalDamaged if it cannot be read."""
        if (self.dir / LEGACY_RECORD).exists():
            _convert_legacy(self)
        try:
            return OpLog.open(self.journal.path, self.op, states.NODE)
        except FileNotFoundError:
            raise UsageError(f"no operation {self.op!r} on this node") from None

    def summary(self) -> OperationSummary:
        """The operation for readers that report: a damaged one reads as state ``damaged`` with the reason."""
        try:
            return summarize(self.log().record)
        except JournalDamaged as exc:
            return OperationSummary(self.op, OpState.DAMAGED, error=(
                f"{exc}; backups and restores stay blocked on this node until it is repaired or {self.dir} is "
                f"moved out of {self.dir.parent}"))

    def journal_tail(self, n: int) -> list[dict[str, Any]]:
        try:
            return list(self.journal.read().records[-n:])
        except (FileNotFoundError, OSError):
            return []


def summarize(rec: OpRecord) -> OperationSummary:
    params = rec.header.get("params")
    return OperationSummary(rec.op, rec.state, str(rec.header.get("kind") or "") or None, rec.created_at,
                            params if isinstance(params, dict) else {}, rec.error, rec.failed_phase)


def flow_of(rec: OpRecord) -> Flow:
    """The flow an operation runs: recorded in its header (older records: by their kind)."""
    name = rec.header.get("flow")
    if isinstance(name, str) and name in FLOWS:
        return FLOWS[name]
    return CLUSTER_RESTORE if rec.header.get("kind") == KIND_CLUSTER else NODE_RESTORE


def params_of(rec: OpRecord) -> RestoreParams:
    """The operation's recorded parameters; JournalDamaged when they cannot be read back."""
    params = rec.header.get("params")
    try:
        return RestoreParams.from_json(params if isinstance(params, dict) else {})
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalDamaged(f"the journal of operation {rec.op} holds no usable restore parameters "
                             f"({exc!r})") from None


def node_params_of(rec: OpRecord) -> NodeParams:
    """The operation's recorded parameters, of its flow's type; JournalDamaged when they cannot be read."""
    if flow_of(rec).params is RestoreParams:
        return params_of(rec)
    params = rec.header.get("params")
    try:
        return MemberParams.from_json(params if isinstance(params, dict) else {})
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalDamaged(f"the journal of operation {rec.op} holds no usable parameters ({exc!r})") from None


class OperationStore:
    """Every operation under ``<state>/operations``; the lock that keeps one restore activity at a time."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / OPERATIONS
        self.lock_path = state_dir / LOCK

    def get(self, op: str) -> NodeOperation:
        return NodeOperation(self.root, op)

    def all(self) -> list[NodeOperation]:
        """Every operation, oldest first; damaged ones first of all (never "the last" operation)."""
        present = [NodeOperation(self.root, d.name) for d in operation_dirs(self.root)]
        present = [o for o in present if o.exists()]
        summaries = {o.op: o.summary() for o in present}
        return sorted(present, key=lambda o: (summaries[o.op].state is not OpState.DAMAGED,
                                              summaries[o.op].created_at, o.op))

    def summaries(self) -> list[OperationSummary]:
        return [o.summary() for o in self.all()]

    def damaged(self) -> list[tuple[str, str]]:
        """(operation, why) for every operation whose journal cannot be read."""
        return [(s.op, str(s.error)) for s in self.summaries() if s.state is OpState.DAMAGED]

    def open_operations(self) -> list[OperationSummary]:
        return [s for s in self.summaries() if s.open]

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """One restore activity per node at a time (flock; released if the process dies)."""
        try:
            with exclusive_lock(self.lock_path, what):
                yield
        except UnsafeRefusal as exc:
            if "another process holds" not in str(exc):
                raise
            raise UnsafeRefusal(f"another restore activity is running on this node (lock {self.lock_path}); "
                                f"refusing to {what}") from None

    def locked(self) -> bool:
        """True while some process holds the restore lock (for the daemon: skip backups)."""
        return is_locked(self.lock_path)


# ---------------------------------------------------------------------------
# operations recorded by an older etcdguard: op.json (rewritten in place) + steps/<step>.json


def _convert_legacy(op: NodeOperation) -> None:
    """Write the journal an old operation directory implies, then move the old files aside (kept)."""
    try:
        record = json.loads((op.dir / LEGACY_RECORD).read_bytes())
        state = OpState.parse(record["state"])
        params = RestoreParams.from_json(record["params"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JournalDamaged(f"the record of operation {op.op} ({op.dir / LEGACY_RECORD}) cannot be read: "
                             f"{str(exc)[:160]}") from None
    old_journal = op.dir / JOURNAL
    if old_journal.exists():
        first = op.journal.read().records[:1]
        if first and isinstance(first[0].get("params"), dict):
            # Converted already; the process stopped before moving op.json aside.
            os.rename(op.dir / LEGACY_RECORD, op.dir / "op-v1.json")
            return
        os.rename(old_journal, op.dir / "journal-v1.jsonl")
    kind = str(record.get("kind") or KIND_LOCAL)
    flow = CLUSTER_RESTORE if kind == KIND_CLUSTER else NODE_RESTORE
    extra = {k: record[k] for k in ("snapshot_fingerprint", "checks") if k in record}
    created = record.get("created_at")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        extra["t"] = created
    new = op.create(kind=kind, flow=flow, params=params, converted_from=LEGACY_RECORD, **extra)
    for step in flow.names:
        path = op.dir / "steps" / f"{step}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_bytes())
            new.emit("step", step=step, status="done", result=data["result"])
    if state is not OpState.RUNNING:
        new.set_state(state, error=record.get("error"), failed_phase=record.get("failed_step"))
    os.rename(op.dir / LEGACY_RECORD, op.dir / "op-v1.json")
    log.info("operation %s: converted its op.json record to %s (the old files are kept beside it)", op.op,
             op.journal.path)


def restore_active(state_dir: Path) -> bool:
    """A restore holds the lock now, or an operation is open (between its steps, waiting for the operator,
    or unreadable: that may be a running restore): backups wait."""
    ops = OperationStore(state_dir)
    return ops.locked() or bool(ops.open_operations())


def snapshot_in_use(state_dir: Path, path: Path) -> bool:
    """Does an operation that is not finished restore from this file (a damaged one may)?"""
    resolved = str(path.resolve())
    for s in OperationStore(state_dir).summaries():
        if s.state is OpState.DAMAGED or (s.open and s.params.get("snapshot") == resolved):
            return True
    return False
