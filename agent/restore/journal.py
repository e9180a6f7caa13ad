"""Durable records of restore operations under the agent's state dir.

Layout: ``<state>/operations/<op>/`` holds ``op.json`` (what the operation is),
``steps/<step>.json`` (each finished step's result, written atomically after
the step's effect is durable) and ``journal.jsonl`` (every start/end, appended
and fsync'ed, for the operator). A step whose result file exists is finished:
re-running it returns the recorded result instead of acting twice.

A record that cannot be read (torn by a disk fault, edited by hand) never
takes the daemon down: ``load`` raises DamagedRecord, and ``record`` turns it
into a record in state ``damaged``, which every reader treats as an
operation that needs attention (backups and restores stay blocked here).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.journal import OP_ID_RE, check_op_id

DAMAGED = "damaged"
# States of an operation that is not finished: backups wait, and no new restore starts.
OPEN_STATES = ("running", "failed-needs-attention", DAMAGED)


class DamagedRecord(UnsafeRefusal):
    """An operation's record on disk cannot be read; acting on a guess of it could lose data."""


def record_problem(data: Any) -> Optional[str]:
    """Pure: what makes parsed ``op.json`` content unusable, or None."""
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, not a JSON object"
    if not isinstance(data.get("state"), str):
        return "has no 'state' string"
    if "params" in data and not isinstance(data["params"], dict):
        return "its 'params' is not an object"
    created = data.get("created_at", 0)
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return "its 'created_at' is not a number"
    return None


def step_problem(data: Any) -> Optional[str]:
    """Pure: what makes parsed ``steps/<step>.json`` content unusable, or None."""
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, not a JSON object"
    if not isinstance(data.get("result"), dict):
        return "has no 'result' object"
    finished = data.get("finished_at")
    if isinstance(finished, bool) or not isinstance(finished, (int, float)):
        return "has no 'finished_at' number"
    return None


def _read_json(path: Path, problem: Any, what: str) -> Any:
    """Parsed JSON of ``path``; DamagedRecord (naming the file and why) if it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except PermissionError as exc:
        raise fsutil.disk_error(f"cannot read {what}", exc) from None
    except OSError as exc:
        raise DamagedRecord(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DamagedRecord(f"{what} {path} is not valid JSON ({str(exc)[:120]})") from None
    why = problem(data)
    if why is not None:
        raise DamagedRecord(f"{what} {path} {why}")
    return data


@dataclass(frozen=True)
class StepRecord:
    step: str
    result: dict[str, Any]
    finished_at: float


class Operation:
    """One operation's directory."""

    def __init__(self, root: Path, op: str) -> None:
        self.op = check_op_id(op)
        self.dir = root / op
        self.steps_dir = self.dir / "steps"

    def exists(self) -> bool:
        try:
            return (self.dir / "op.json").exists()
        except OSError as exc:
            raise fsutil.disk_error(f"cannot look for operation {self.op}", exc) from None

    def create(self, record: dict[str, Any]) -> None:
        fsutil.ensure_private_dir(self.dir.parent)
        fsutil.ensure_private_dir(self.dir)
        fsutil.ensure_private_dir(self.steps_dir)
        fsutil.atomic_write_json(self.dir / "op.json", {**record, "op": self.op})
        self.journal("created")

    def load(self) -> dict[str, Any]:
        """The operation's record exactly as on disk; DamagedRecord if it cannot be read or makes no sense."""
        try:
            data: dict[str, Any] = _read_json(self.dir / "op.json", record_problem,
                                              f"the record of operation {self.op}")
        except FileNotFoundError:
            raise UsageError(f"no operation {self.op!r} on this node") from None
        return data

    def record(self) -> dict[str, Any]:
        """The record for readers that report: a damaged one reads as state ``damaged`` with the reason."""
        try:
            return self.load()
        except DamagedRecord as exc:
            return {"op": self.op, "state": DAMAGED, "error": f"{exc}; backups and restores stay blocked on this "
                    f"node until it is repaired or {self.dir} is moved out of {self.dir.parent}"}

    def update(self, **fields: Any) -> dict[str, Any]:
        data = {**self.load(), **fields}   # a damaged record is never overwritten
        fsutil.atomic_write_json(self.dir / "op.json", data)
        return data

    def finished(self, step: str) -> Optional[StepRecord]:
        path = self.steps_dir / f"{step}.json"
        try:
            data = _read_json(path, step_problem, f"the {step} step record of operation {self.op}")
        except FileNotFoundError:
            return None
        return StepRecord(step, data["result"], float(data["finished_at"]))

    def finish(self, step: str, result: dict[str, Any]) -> StepRecord:
        rec = StepRecord(step, result, time.time())
        fsutil.atomic_write_json(self.steps_dir / f"{step}.json",
                                 {"step": step, "result": result, "finished_at": rec.finished_at})
        self.journal("finished", step=step, result=result)
        return rec

    def forget(self, step: str) -> None:
        """Drop a step's record (after it was undone by a rollback)."""
        with contextlib.suppress(FileNotFoundError):
            (self.steps_dir / f"{step}.json").unlink()
            fsutil.fsync_dir(self.steps_dir)

    def journal(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "event": event, **fields}, sort_keys=True) + "\n"
        path = self.dir / "journal.jsonl"
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsutil.fsync_dir(self.dir)

    def journal_lines(self) -> list[dict[str, Any]]:
        """Journal entries; a torn last line (crash mid-append) and lines that are not objects are skipped."""
        out: list[dict[str, Any]] = []
        try:
            text = (self.dir / "journal.jsonl").read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return out
        except OSError:
            return out   # the journal is for the operator; the record and step files decide
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out


class OperationStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "operations"

    def get(self, op: str) -> Operation:
        return Operation(self.root, op)

    def all(self) -> list[Operation]:
        """Every operation, oldest first; damaged ones (state ``damaged``) first of all."""
        try:
            if not self.root.is_dir():
                return []
            ops = [Operation(self.root, d.name) for d in self.root.iterdir()
                   if d.is_dir() and OP_ID_RE.match(d.name)]
            present = [o for o in ops if o.exists()]
        except OSError as exc:
            raise fsutil.disk_error(f"cannot read the restore records in {self.root}", exc) from None
        created = {o.op: o.record().get("created_at") or 0.0 for o in present}
        return sorted((o for o in ops if o.op in created), key=lambda o: (created[o.op], o.op))

    def damaged(self) -> list[tuple[str, str]]:
        """(operation, why) for every record that cannot be read."""
        out = []
        for op in self.all():
            record = op.record()
            if record.get("state") == DAMAGED:
                out.append((op.op, str(record.get("error"))))
        return out

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """One restore activity per node at a time (flock; released if the process dies)."""
        fsutil.ensure_private_dir(self.state_dir)
        fd = os.open(self.state_dir / "restore.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UnsafeRefusal(
                        f"another restore activity is running on this node (lock {self.state_dir}/restore.lock); "
                        f"refusing to {what}"
                    ) from None
                raise
            yield
        finally:
            os.close(fd)

    def locked(self) -> bool:
        """True while some process holds the restore lock (for the daemon: skip backups)."""
        path = self.state_dir / "restore.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False
