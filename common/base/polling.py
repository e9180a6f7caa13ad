"""Waiting with a deadline: one polling loop for the whole code base.

Every "until it holds, or until the bound passes" in the agent and the
coordinator goes through `poll_until` (or a `Deadline` shared by several
steps), so each wait has a monotonic bound, checks at least once (a zero
timeout is a single check), checks one last time when the bound is reached,
and fails with one typed error that names what was awaited.

Libraries such as tenacity retry calls with back-off, but their stop/wait
objects are more machinery than a check-sleep loop needs and the error they
raise does not say what was awaited, so this loop is written here.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar, Union

from etcdguard.common.base.errors import EtcdguardError

T = TypeVar("T")

DEFAULT_INTERVAL = 0.05


class PollTimeout(EtcdguardError):
    """What was awaited did not happen within its bound."""

    def __init__(self, what: str, timeout: float, last: str = "") -> None:
        detail = f": {last}" if last else ""
        super().__init__(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        self.what = what
        self.timeout = timeout
        self.last = last


class Deadline:
    """A point in monotonic time that several waits share (``remaining()`` never goes below 0)."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = max(0.0, timeout)
        self._clock = clock
        self.at = clock() + self.timeout

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at

    def elapsed(self) -> float:
        return self.timeout - (self.at - self._clock())

    def sooner(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, or this one if it comes first."""
        other = Deadline(seconds, self._clock)
        return other if other.at < self.at else self


def poll_until(
    check: Callable[[], Optional[T]],
    timeout: Union[float, Deadline],
    *,
    interval: float = DEFAULT_INTERVAL,
    what: str = "a condition",
    last: Optional[Callable[[], str]] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    ``timeout`` is seconds from now or a shared `Deadline`. ``check`` runs at
    least once and once more when the bound is reached; exceptions it raises
    propagate. When the bound passes first, raises `PollTimeout` naming
    ``what`` and, when given, ``last()`` (what still holds, for the message).
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
    while True:
        value = check()
        if value:
            return value
        left = deadline.remaining()
        if left <= 0:
            raise PollTimeout(what, deadline.timeout, last() if last is not None else "")
        sleep(min(interval, left))
