"""How the copies into the vault went: every backup and scheduled pull ends as one Attempt.

One record serves ``etcdguardctl status``, the schedule and the failure
metric alike, so they cannot disagree: each failed attempt is one increment
of ``etcdguard_vault_failures_total{reason}`` with the reason status shows;
a failure stays shown (``failing``) until a copy succeeds, whatever comes in
between; and the number of failures in a row is what the retry's backoff
grows with (policy.next_pull_due).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

BACKUP = "backup"          # etcdguardctl backup
SCHEDULED = "scheduled"    # the schedule's pull (and its retries)


@dataclass(frozen=True)
class Attempt:
    """One copy into the vault, or one that failed."""

    at: float                      # when it ended (unix seconds)
    ok: bool
    kind: str                      # BACKUP or SCHEDULED
    message: str                   # what it did, or why it failed (the operator's sentence)
    member: Optional[str] = None
    sha256: Optional[str] = None   # the snapshot it copied (or found already there)
    reason: Optional[str] = None   # a failure's etcdguard_vault_failures_total reason

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Copies:
    """The record at one moment."""

    last: Optional[Attempt] = None          # the newest attempt
    failing: Optional[Attempt] = None       # the newest failure since the last success (None: none)
    failures: int = 0                       # failed attempts in a row
    failing_since: Optional[float] = None   # when the first of them ended
    ended: int = 0                          # failures in a row that the last attempt, a success, ended

    def to_json(self) -> dict[str, Any]:
        return {"last_pull": self.last.to_json() if self.last else None,
                "last_failure": self.failing.to_json() if self.failing else None,
                "failures_in_a_row": self.failures, "failing_since_at": self.failing_since}


class CopyRecord:
    """Thread-safe: backups end in control threads, scheduled pulls in the daemon's worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._copies = Copies()

    def view(self) -> Copies:
        with self._lock:
            return self._copies

    def record(self, attempt: Attempt) -> Copies:
        with self._lock:
            c = self._copies
            if attempt.ok:
                self._copies = Copies(last=attempt, ended=c.failures)
            else:
                self._copies = Copies(last=attempt, failing=attempt, failures=c.failures + 1,
                                      failing_since=c.failing_since if c.failures else attempt.at)
            return self._copies

    def succeeded(self, kind: str, message: str, member: Optional[str] = None,
                  sha256: Optional[str] = None) -> Copies:
        return self.record(Attempt(time.time(), True, kind, message, member, sha256))

    def failed(self, kind: str, reason: str, message: str, member: Optional[str] = None) -> Copies:
        return self.record(Attempt(time.time(), False, kind, message, member, reason=reason))
