"""One journal library for both daemons: append-only JSON lines, fsync'd, and honest about damage.

Every operation (a restore on a node, a cluster restore, a member replacement,
...) keeps its history in one ``journal.jsonl``: each record is one JSON
object on one line, appended with ``O_APPEND | O_CLOEXEC`` (short writes
continued), fsync'd before ``append`` returns, the directory fsync'd when the
file is created. Nothing is ever rewritten in place.

Reading tells three cases apart:

- a *torn last line* (no newline at the end: the process died in the middle
  of an append): ignored when reading, and cut back to the last newline,
  with a log line saying so, before anything else is appended, so a new
  record never fuses with the torn one;
- an *unreadable record anywhere else* (a complete line that is not a JSON
  object with an ``event``): the journal is *damaged*; readers report the
  reason and nothing resumes on a history that could not be read;
- everything readable: the records, in order.

The operation id rule, the lock that keeps one activity at a time and the
id generator live here too, so there is one of each.

Why by hand: the standard library has the pieces (os.write, fsync, flock)
but no append-only log with torn-tail repair; SQLite would do it with more
machinery than a few records per step need, and an operator could no longer
read the history with ``cat``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UnsafeRefusal, UsageError

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
# An operation id becomes a directory name: never ".", "..", hidden or option-like.
OP_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
OP_ID_RE = re.compile(f"^{OP_ID_PATTERN}$")
MAX_LINE = 1 << 20       # a record longer than this is not one etcdguard wrote


def new_op_id(prefix: str = "r", now: Optional[float] = None) -> str:
    """A fresh operation id: ``<prefix><UTC time>-<6 hex>`` (sortable, unique enough to never collide)."""
    t = time.gmtime(time.time() if now is None else now)
    return f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', t)}-{secrets.token_hex(3)}"


def check_op_id(op: str) -> str:
    """``op`` if it is a valid operation id, else UsageError saying what one looks like."""
    if not isinstance(op, str) or not OP_ID_RE.match(op):
        raise UsageError(f"operation id {op!r} is not valid: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 64")
    return op


class JournalDamaged(UnsafeRefusal):
    """A record before the end of a journal cannot be read: the history is not known."""


@dataclass(frozen=True)
class JournalRead:
    """What a journal holds: its readable records, and what could not be read."""

    records: tuple[dict[str, Any], ...]
    damage: Optional[str] = None     # why a record cannot be read (None: every complete record is readable)
    torn: int = 0                    # bytes of a torn last line (ignored; cut at the next append)


def parse_lines(data: bytes, where: str) -> JournalRead:
    """Pure: the records of journal bytes, the first damage found, and the torn tail's length."""
    end = data.rfind(b"\n") + 1
    torn = len(data) - end
    records: list[dict[str, Any]] = []
    damage: Optional[str] = None
    for number, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
        problem = _line_problem(raw)
        if problem is None:
            records.append(json.loads(raw))
            continue
        if damage is None:
            damage = f"{where}: record {number} {problem}"
    return JournalRead(tuple(records), damage, torn)


def _line_problem(raw: bytes) -> Optional[str]:
    if len(raw) > MAX_LINE:
        return f"is {len(raw)} bytes long, more than any record etcdguard writes"
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"is not JSON ({str(exc)[:80]})"
    if not isinstance(value, dict):
        return f"is {type(value).__name__}, not a JSON object"
    if not isinstance(value.get("event"), str):
        return "has no 'event' name"
    return None


class JournalFile:
    """One append-only journal file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        try:
            return self.path.is_file()
        except OSError as exc:
            raise fsutil.disk_error(f"cannot look for {self.path}", exc) from None

    def read(self) -> JournalRead:
        """The records; FileNotFoundError when there is no journal. A read error is damage."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise
        except PermissionError as exc:
            raise fsutil.disk_error(f"cannot read {self.path}", exc) from None
        except OSError as exc:
            return JournalRead((), f"{self.path} cannot be read: {exc.strerror or exc}")
        return parse_lines(data, str(self.path))

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``t`` stamped now unless given) and fsync it; returns the record."""
        record = {"t": round(time.time(), 6), "event": event, **fields}
        line = (json.dumps(record, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
        created = not self.path.exists()
        if created:
            fsutil.ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not created:
                self._cut_torn_tail(fd)
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsutil.fsync_dir(self.path.parent)
        return record

    def _cut_torn_tail(self, fd: int) -> None:
        """Cut a last line without a newline (a crash mid-append) back to the last newline."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        if os.pread(fd, 1, size - 1) == b"\n":
            return
        keep = 0
        step = 64 * 1024
        at = size
        while at > 0:
            start = max(0, at - step)
            chunk = os.pread(fd, at - start, start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            at = start
        os.ftruncate(fd, keep)
        os.fsync(fd)
        log.warning("journal %s: cut a torn last record (%d bytes, written when a process stopped in the middle "
                    "of an append) before appending", self.path, size - keep)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path``'s flock while the block runs (released if the process dies).

    UnsafeRefusal naming ``what`` and the lock file when another process holds it."""
    fsutil.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UnsafeRefusal(f"another process holds {path}; refusing to {what}") from None
            raise
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """True while some process holds ``path``'s flock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def operation_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` named like an operation (sorted by name)."""
    try:
        if not root.is_dir():
            return []
        return sorted(d for d in root.iterdir() if d.is_dir() and OP_ID_RE.match(d.name))
    except OSError as exc:
        raise fsutil.disk_error(f"cannot read the operations in {root}", exc) from None
