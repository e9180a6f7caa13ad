"""The one polling loop: returns the value, checks at least once and at the bound, names what timed out."""

from __future__ import annotations

import pytest
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.base.polling import Deadline, PollTimeout, poll_until


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
