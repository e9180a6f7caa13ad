"""The durable journal of a cluster restore: one append-only JSON-lines file per operation.

Every record is appended and fsync'ed before the step it announces is sent
(``started``) and after its result is known (``done``/``failed``), so after a
crash of the coordinator the journal says exactly which steps may have run
and which have: a resume re-sends what started without finishing (the agents
deduplicate by operation and step) and skips what is done. The directory is
fsync'ed when the file is created; a torn last line (a crash mid-append) is
ignored when reading.

Layout: ``<state_dir>/restores/<op>/journal.jsonl``. The first record holds
the plan. ``replay`` folds the records into an ``OperationRecord``: the
current state, each step's status and result, the facts learned on the way
(the live revision, the safety snapshot, old and new cluster ids) and when
each phase started and ended.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.journal import OP_ID_RE
from etcdguard.coordinator.restore.plan import RestorePlan
from etcdguard.coordinator.restore.states import OpState, transition

JOURNAL = "journal.jsonl"

STARTED, DONE, FAILED = "started", "done", "failed"


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
class OperationRecord:
    """An operation as its journal tells it (mutable while it is being replayed)."""

    op: str
    plan: RestorePlan
    state: OpState = OpState.RUNNING
    created_at: float = 0.0
    until: Optional[str] = None
    phases: dict[str, PhaseStatus] = field(default_factory=dict)
    reverts: dict[str, PhaseStatus] = field(default_factory=dict)
    steps: dict[tuple[str, str], StepStatus] = field(default_factory=dict)          # (phase, member)
    revert_steps: dict[tuple[str, str], StepStatus] = field(default_factory=dict)   # (phase, member)
    facts: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    failed_phase: Optional[str] = None
    ended_at: Optional[float] = None

    def phase_done(self, phase: str) -> bool:
        s = self.phases.get(phase)
        return s is not None and s.status == DONE

    def step_done(self, phase: str, member: str) -> Optional[StepStatus]:
        s = self.steps.get((phase, member))
        return s if s is not None and s.status == DONE else None

    def reached(self) -> list[str]:
        """Phases that started, in plan order."""
        return [p.phase for p in self.plan.phases if p.phase in self.phases]

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op, "state": self.state.value, "plan_id": self.plan.plan_id, "kind": self.plan.kind,
            "snapshot": self.plan.snapshot.id, "created_at": self.created_at, "ended_at": self.ended_at,
            "until": self.until, "error": self.error, "failed_phase": self.failed_phase,
            "phases": {k: vars(v) for k, v in self.phases.items()},
            "reverts": {k: vars(v) for k, v in self.reverts.items()},
            "facts": self.facts,
            "members": [m.member for m in self.plan.members],
        }


class Journal:
    """One operation's journal file."""

    def __init__(self, root: Path, op: str) -> None:
        if not OP_ID_RE.match(op):
            raise UsageError(f"operation id {op!r} is not valid (letters, digits, '.', '_', '-'; at most 64)")
        self.op = op
        self.dir = root / op
        self.path = self.dir / JOURNAL

    def exists(self) -> bool:
        return self.path.is_file()

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"t": round(time.time(), 6), "event": event, **fields}
        line = (json.dumps(record, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
        created = not self.path.exists()
        if created:
            fsutil.ensure_private_dir(self.dir.parent)
            fsutil.ensure_private_dir(self.dir)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsutil.fsync_dir(self.dir)
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise UsageError(f"no restore operation {self.op!r} (see `etcdguardctl restores`)") from None
        out = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("event"), str):
                out.append(rec)
        return out

    def replay(self) -> OperationRecord:
        return replay(self.op, self.records())


def _t(record: dict[str, Any]) -> float:
    """A record's time stamp; a record whose stamp is not a number counts as time 0 (never a crash)."""
    value = record.get("t", 0)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def replay(op: str, records: list[dict[str, Any]]) -> OperationRecord:
    """Fold journal records into the operation's current record (pure).

    Raises UsageError for a journal whose plan cannot be read; any other odd record is skipped."""
    if not records or records[0].get("event") != "planned":
        raise UsageError(f"restore operation {op}: its journal does not start with the plan; it is damaged")
    first = records[0]
    try:
        plan = RestorePlan.from_json(first.get("plan"))
    except ValueError as exc:
        raise UsageError(f"restore operation {op}: the plan in its journal cannot be read: {exc}") from None
    until = first.get("until")
    rec = OperationRecord(op=op, plan=plan, created_at=_t(first), until=until if isinstance(until, str) else None)
    for r in records[1:]:
        event, t = r["event"], _t(r)
        if event == "state":
            try:
                rec.state = OpState(r["state"])
            except (KeyError, ValueError):
                continue
            if rec.state in (OpState.DONE, OpState.FAILED, OpState.ROLLED_BACK):
                rec.ended_at = t
            if r.get("error"):
                rec.error = str(r["error"])
            if r.get("failed_phase"):
                rec.failed_phase = str(r["failed_phase"])
        elif event in ("phase", "revert-phase"):
            target = rec.phases if event == "phase" else rec.reverts
            phase = str(r.get("phase"))
            prev = target.get(phase)
            status = str(r.get("status"))
            entry = PhaseStatus(status, prev.started_at if prev else None, prev.ended_at if prev else None,
                                r.get("error"))
            if status == STARTED:
                entry.started_at, entry.ended_at = t, None
            else:
                entry.ended_at = t
            target[phase] = entry
        elif event in ("step", "revert-step"):
            target_steps = rec.steps if event == "step" else rec.revert_steps
            key = (str(r.get("phase")), str(r.get("member")))
            target_steps[key] = StepStatus(str(r.get("status")), r.get("result"), r.get("error"), t)
        elif event == "fact":
            rec.facts[str(r.get("key"))] = r.get("value")
        elif event == "until":
            rec.until = r.get("phase")
    return rec


class JournalStore:
    """All operations' journals under ``<state_dir>/restores``; the lock that makes one run at a time."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "restores"
        self.lock_path = state_dir / "restore.lock"

    def journal(self, op: str) -> Journal:
        return Journal(self.root, op)

    def create(self, plan: RestorePlan, until: Optional[str] = None) -> Journal:
        j = self.journal(plan.op)
        if j.exists():
            raise UsageError(f"restore operation {plan.op} already exists")
        j.append("planned", op=plan.op, plan=plan.to_json(), until=until)
        j.append("state", state=OpState.RUNNING.value)
        return j

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if OP_ID_RE.match(d.name) and (d / JOURNAL).is_file())

    def read_all(self) -> tuple[list[OperationRecord], list[tuple[str, str]]]:
        """(every operation that can be read, oldest first; (op, why) of each journal that cannot)."""
        good, bad = [], []
        for op in self.ids():
            try:
                good.append(self.journal(op).replay())
            except (UsageError, OSError, ValueError, TypeError, KeyError) as exc:
                bad.append((op, str(exc)))
        return sorted(good, key=lambda r: r.created_at), bad

    def all(self) -> list[OperationRecord]:
        return self.read_all()[0]

    def damaged(self) -> list[tuple[str, str]]:
        """(op, why) of each journal that cannot be read back: maybe a restore that ran half-way."""
        return self.read_all()[1]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while an operation runs: a second coordinator on this state dir is refused."""
        fsutil.ensure_private_dir(self.lock_path.parent)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UnsafeRefusal(f"another restore runs on this coordinator's state dir "
                                        f"({self.lock_path} is locked)") from None
                raise
            yield
        finally:
            os.close(fd)


def set_state(journal: Journal, record: OperationRecord, new: OpState, **fields: Any) -> None:
    """Move ``record`` to ``new`` through the transitions table, journaled first."""
    transition(record.state, new)
    journal.append("state", state=new.value, previous=record.state.value, **fields)
    record.state = new
    if fields.get("error"):
        record.error = str(fields["error"])
    if fields.get("failed_phase"):
        record.failed_phase = str(fields["failed_phase"])
