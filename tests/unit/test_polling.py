"""The one polling loop: returns the value, checks at least once and at the bound, names what timed out,
and gives up at once when its stop event is set."""

from __future__ import annotations

import threading
import time

import pytest
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.base.polling import Deadline, PollStopped, PollTimeout, poll, poll_until


class Clock:
    """A fake monotonic clock that sleeping advances: the loop's timing is checked as data."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_returns_the_first_truthy_value() -> None:
    clock = Clock()
    answers = iter([None, 0, "", "ready"])
    assert poll_until(lambda: next(answers), Deadline(5, clock), interval=0.5, sleep=clock.sleep) == "ready"
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_times_out_naming_what_and_what_still_holds() -> None:
    clock = Clock()
    checks: list[float] = []

    def never() -> None:
        checks.append(clock.now)

    with pytest.raises(PollTimeout) as info:
        poll_until(never, Deadline(1.2, clock), interval=0.5, what="etcd to stop", last=lambda: "port open",
                   sleep=clock.sleep)
    assert str(info.value) == "timed out after 1.2s waiting for etcd to stop: port open"
    assert isinstance(info.value, EtcdguardError) and info.value.what == "etcd to stop"
    assert clock.sleeps == [0.5, 0.5, 0.2]       # never past the bound
    assert checks == [100.0, 100.5, 101.0, 101.2]  # and one last check at it


def test_zero_timeout_is_one_check() -> None:
    calls: list[int] = []
    with pytest.raises(PollTimeout):
        poll_until(lambda: calls.append(1), 0)
    assert calls == [1]
    assert poll_until(lambda: 7, 0) == 7


def test_exceptions_from_the_check_propagate() -> None:
    def broken() -> None:
        raise OSError("no such file")

    with pytest.raises(OSError, match="no such file"):
        poll_until(broken, 5)


def test_deadline_is_shared_and_never_negative() -> None:
    clock = Clock()
    d = Deadline(10, clock)
    clock.now += 4
    assert (d.remaining(), d.elapsed(), d.expired) == (6, 4, False)
    assert d.sooner(2).remaining() == 2 and d.sooner(60) is d
    clock.now += 7
    assert (d.remaining(), d.expired) == (0.0, True)
    assert Deadline(-3, clock).remaining() == 0.0


class ClockEvent(threading.Event):
    """A stop event whose wait() passes the fake clock's time (all of it while the event is not set)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set() and timeout is not None:
            self.clock.sleep(timeout)
        return self.is_set()


def test_poll_yields_attempts_until_the_caller_is_done() -> None:
    clock = Clock()
    seen = []
    for attempt in poll(Deadline(5, clock), interval=0.5, sleep=clock.sleep):
        seen.append((attempt, clock.now))
        if attempt == 3:
            break
    assert seen == [(1, 100.0), (2, 100.5), (3, 101.0)]
    assert clock.sleeps == [0.5, 0.5]


def test_poll_times_out_after_one_last_attempt_at_the_bound() -> None:
    clock = Clock()
    seen: list[float] = []
    with pytest.raises(PollTimeout) as info:
        for _ in poll(Deadline(0.7, clock), interval=0.5, what="pids 7, 9 to exit", last=lambda: f"{len(seen)} tries",
                      sleep=clock.sleep):
            seen.append(clock.now)
    assert seen == [100.0, 100.5, 100.7]
    assert str(info.value) == "timed out after 0.7s waiting for pids 7, 9 to exit: 3 tries"
    with pytest.raises(PollTimeout):
        for _ in poll(0):
            pass


def test_a_set_stop_event_ends_the_wait_at_once() -> None:
    clock = Clock()
    stop = ClockEvent(clock)
    checks: list[float] = []

    def check() -> None:
        checks.append(clock.now)
        if len(checks) == 2:
            stop.set()   # e.g. SIGTERM while the second check runs

    with pytest.raises(PollStopped) as info:
        poll_until(check, Deadline(60, clock), interval=1.0, what="etcd to stop", stop=stop)
    assert checks == [100.0, 101.0]           # no third check, and no sleeping out the 60 s
    assert clock.sleeps == [1.0]
    assert str(info.value) == "stopped waiting for etcd to stop after 1.0s: asked to stop"
    assert isinstance(info.value, EtcdguardError) and info.value.what == "etcd to stop"
    with pytest.raises(PollStopped):          # already set: not even one attempt
        next(poll(60, stop=stop))


def test_a_real_stop_event_interrupts_the_pause() -> None:
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(PollStopped):
        poll_until(lambda: None, 30, interval=10.0, stop=stop)
    assert time.monotonic() - started < 5.0
    stop.clear()
    assert poll_until(lambda: "done", 30, stop=stop) == "done"
