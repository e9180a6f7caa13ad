"""An operation's record, and the one reducer that builds it from journal records.

Live state and replay are one code path: ``OpLog.emit`` appends a record to
the journal (common/journal.py) and then applies it with ``apply``, the same
function ``replay`` folds a journal with after a restart. ``apply`` checks
every state change against the operation's transitions table
(common/ops/states.py), so a journal whose history breaks the table is
damaged, never believed.

The vocabulary, shared by the agent's node operations and the coordinator's
cluster operations:

- the first record is the header: ``planned`` (a cluster operation, with its
  plan) or ``created`` (a node operation, with its parameters);
- ``state``: ``state`` plus ``error`` / ``failed_phase`` / ``why``;
- ``phase`` / ``revert-phase``: a step across the cluster started, done or failed;
- ``step`` / ``revert-step``: a step on one member (``member``; "" on a node)
  started, done (with ``result``) or failed (with ``error``);
- ``forget``: a node step's record is dropped after its undo ran, so a retry runs it again;
- ``fact``: something learned on the way (``key``, ``value``);
- ``until``: where the operation pauses;
- anything else is a note for the operator (kept, never interpreted).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.journal import JournalDamaged, JournalFile
from etcdguard.common.ops.states import IllegalTransition, OpState, Table, transition

STARTED, DONE, FAILED = "started", "done", "failed"
STATUSES = (STARTED, DONE, FAILED)
HEADERS = ("planned", "created")
FINAL_STATES = (OpState.DONE, OpState.FAILED, OpState.ROLLED_BACK)


@dataclass
class StepStatus:
    status: str
    result: Any = None
    error: Optional[str] = None
    at: float = 0.0


@dataclass
class PhaseStatus:
    status: str
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    error: Optional[str] = None


@dataclass
class OpRecord:
    """An operation as its journal tells it."""

    op: str
    header: dict[str, Any]
    table: Table
    state: OpState = OpState.RUNNING
    created_at: float = 0.0
    until: Optional[str] = None
    phases: dict[str, PhaseStatus] = field(default_factory=dict)
    reverts: dict[str, PhaseStatus] = field(default_factory=dict)
    steps: dict[tuple[str, str], StepStatus] = field(default_factory=dict)          # (step, member)
    revert_steps: dict[tuple[str, str], StepStatus] = field(default_factory=dict)   # (step, member)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None
    failed_phase: Optional[str] = None
    ended_at: Optional[float] = None

    def phase_done(self, phase: str) -> bool:
        s = self.phases.get(phase)
        return s is not None and s.status == DONE

    def step_done(self, step: str, member: str = "") -> Optional[StepStatus]:
        s = self.steps.get((step, member))
        return s if s is not None and s.status == DONE else None

    def step_started(self, step: str, member: str = "") -> bool:
        return (step, member) in self.steps


def _t(record: dict[str, Any]) -> float:
    value = record.get("t", 0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _text(record: dict[str, Any], key: str) -> Optional[str]:
    value = record.get(key)
    return str(value) if value not in (None, "") else None


def _status(record: dict[str, Any], where: str) -> str:
    status = record.get("status")
    if status not in STATUSES:
        raise ValueError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
    return str(status)


def check(rec: OpRecord, record: dict[str, Any]) -> None:
    """Raise ValueError (IllegalTransition for a state change) if ``record`` cannot apply to ``rec``."""
    event = record.get("event")
    if event == "state":
        try:
            new = OpState.parse(record.get("state"))
        except ValueError:
            raise ValueError(f"state {record.get('state')!r} is not a known state") from None
        transition(rec.state, new, rec.table)
    elif event in ("phase", "revert-phase", "step", "revert-step"):
        _status(record, f"a {event} record")
    elif event in HEADERS:
        raise ValueError(f"a second {event} record")


def apply(rec: OpRecord, record: dict[str, Any]) -> None:
    """Fold one journal record into ``rec`` (checked first: raises before changing anything)."""
    check(rec, record)
    event, t = record["event"], _t(record)
    if event == "state":
        _apply_state(rec, record, t)
    elif event in ("phase", "revert-phase"):
        _apply_phase(rec.phases if event == "phase" else rec.reverts, record, t)
    elif event in ("step", "revert-step"):
        target = rec.steps if event == "step" else rec.revert_steps
        name = str(record.get("step") or record.get("phase"))
        target[(name, str(record.get("member") or ""))] = StepStatus(
            str(record["status"]), record.get("result"), _text(record, "error"), t)
    elif event == "forget":
        rec.steps.pop((str(record.get("step")), str(record.get("member") or "")), None)
    elif event == "fact":
        rec.facts[str(record.get("key"))] = record.get("value")
    elif event == "until":
        rec.until = _text(record, "phase")
    else:
        rec.notes.append(record)


def _apply_state(rec: OpRecord, record: dict[str, Any], t: float) -> None:
    rec.state = OpState.parse(record["state"])
    rec.ended_at = t if rec.state in FINAL_STATES else None
    if record.get("error"):
        rec.error = str(record["error"])
    failed = _text(record, "failed_phase") or _text(record, "failed_step")
    if failed:
        rec.failed_phase = failed
    if record.get("clear_error"):
        rec.error = None
        if rec.state is OpState.RUNNING:
            rec.failed_phase = None


def _apply_phase(target: dict[str, PhaseStatus], record: dict[str, Any], t: float) -> None:
    phase = str(record.get("phase"))
    prev = target.get(phase)
    status = str(record["status"])
    entry = PhaseStatus(status, prev.started_at if prev else None, prev.ended_at if prev else None,
                        _text(record, "error"))
    if status == STARTED:
        entry.started_at, entry.ended_at = t, None
    else:
        entry.ended_at = t
    target[phase] = entry


def replay(op: str, records: tuple[dict[str, Any], ...] | list[dict[str, Any]], table: Table,
           where: str = "its journal") -> OpRecord:
    """Fold a journal into the operation's record (pure); JournalDamaged naming the record that does not fit."""
    if not records or records[0].get("event") not in HEADERS:
        raise JournalDamaged(f"operation {op}: {where} does not start with the operation's header "
                             "(planned/created): it is damaged")
    first = records[0]
    until = first.get("until")
    rec = OpRecord(op=op, header={k: v for k, v in first.items() if k not in ("t", "event")}, table=table,
                   created_at=_t(first), until=until if isinstance(until, str) else None)
    for number, r in enumerate(records[1:], 2):
        try:
            apply(rec, r)
        except (IllegalTransition, ValueError, KeyError, TypeError) as exc:
            raise JournalDamaged(f"operation {op}: record {number} of {where} does not fit its history "
                                 f"({exc}): it is damaged") from None
    return rec


class OpLog:
    """One operation's journal file and its live record; every change goes to disk first."""

    def __init__(self, journal: JournalFile, record: OpRecord) -> None:
        self.journal = journal
        self.record = record
        self._lock = threading.Lock()

    @property
    def op(self) -> str:
        return self.record.op

    @property
    def path(self) -> Path:
        return self.journal.path

    @classmethod
    def create(cls, path: Path, op: str, header: str, table: Table, **fields: Any) -> OpLog:
        journal = JournalFile(path)
        if journal.exists():
            raise FileExistsError(f"operation {op} already has a journal at {path}")
        first = journal.append(header, op=op, **fields)
        return cls(journal, replay(op, [first], table, str(path)))

    @classmethod
    def open(cls, path: Path, op: str, table: Table) -> OpLog:
        """The operation's log, replayed; JournalDamaged with the reason if any record cannot be read."""
        journal = JournalFile(path)
        read = journal.read()
        if read.damage is not None:
            raise JournalDamaged(f"operation {op}: its journal is damaged: {read.damage}; nothing is resumed on a "
                                 "history that cannot be read")
        return cls(journal, replay(op, read.records, table, str(path)))

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Check, append (fsync'd) and apply one record."""
        with self._lock:
            check(self.record, {"event": event, **fields})
            written = self.journal.append(event, **fields)
            apply(self.record, written)
            return written

    def set_state(self, new: OpState, **fields: Any) -> None:
        """Move the operation to ``new`` through its transitions table, journaled first."""
        self.emit("state", state=new.value, previous=self.record.state.value, **fields)

    def fact(self, key: str, value: Any) -> None:
        self.emit("fact", key=key, value=value)
