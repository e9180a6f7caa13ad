"""Waiting with a deadline: one polling loop for the whole code base.

Every "until it holds, or until the bound passes" in the agent and the
coordinator goes through `poll_until` (a check that returns the awaited
value) or `poll` (a loop body that decides itself when it is done), with a
`Deadline` that several steps may share. So each wait has a monotonic bound,
checks at least once (a zero timeout is a single check), checks one last
time when the bound is reached, and fails with one typed error that names
what was awaited. Given a ``stop`` event (set when the daemon stops or an
operation is cancelled), a wait ends as soon as it is set, with `PollStopped`
instead of sleeping out its bound.

Libraries such as tenacity retry calls with back-off, but their stop/wait
objects are more machinery than a check-sleep loop needs and the error they
raise does not say what was awaited, so this loop is written here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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


class PollStopped(EtcdguardError):
    """A wait was given up because its stop event was set (the daemon stops, or the operation was cancelled)."""

    def __init__(self, what: str, waited: float) -> None:
        super().__init__(f"stopped waiting for {what} after {waited:.1f}s: asked to stop")
        self.what = what
        self.waited = waited


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


def poll(
    timeout: Union[float, Deadline],
    *,
    interval: float = DEFAULT_INTERVAL,
    what: str = "a condition",
    last: Optional[Callable[[], str]] = None,
    stop: Optional[threading.Event] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[int]:
    """The attempts of one wait, for a loop that decides itself when it is done::

        for _ in poll(timeout, what="the leftover tools to exit"):
            if not still_running():
                break

    Yields the attempt number (1, 2, ...): the first at once, then one every
    ``interval``, the last when the bound is reached. Asked for one more after
    that, raises `PollTimeout` naming ``what`` and, when given, ``last()``
    (what still holds, for the message). With ``stop``, the pause between
    attempts ends as soon as the event is set, and `PollStopped` is raised
    instead of the next attempt (also before the first one).
    """
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
    attempt = 0
    while True:
        if stop is not None and stop.is_set():
            raise PollStopped(what, deadline.elapsed())
        attempt += 1
        yield attempt
        left = deadline.remaining()
        if left <= 0:
            raise PollTimeout(what, deadline.timeout, last() if last is not None else "")
        if stop is not None:
            stop.wait(min(interval, left))
        else:
            sleep(min(interval, left))


def poll_until(
    check: Callable[[], Optional[T]],
    timeout: Union[float, Deadline],
    *,
    interval: float = DEFAULT_INTERVAL,
    what: str = "a condition",
    last: Optional[Callable[[], str]] = None,
    stop: Optional[threading.Event] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    ``timeout`` is seconds from now or a shared `Deadline`. ``check`` runs at
    least once and once more when the bound is reached; exceptions it raises
    propagate. When the bound passes first, raises `PollTimeout` naming
    ``what`` and, when given, ``last()`` (what still holds, for the message);
    when ``stop`` is set first, `PollStopped` (see `poll`).
    """
    attempts = poll(timeout, interval=interval, what=what, last=last, stop=stop, sleep=sleep)
    while True:
        next(attempts)
        value = check()
        if value:
            return value
