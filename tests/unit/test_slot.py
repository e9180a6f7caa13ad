"""The single slot for long work: one holder at a time, and it says what the holder does and for how long."""

from __future__ import annotations

import threading

import pytest
from etcdguard.common.base.slot import Slot


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_free_slot_says_nothing_and_a_taken_one_says_what_and_how_long() -> None:
    clock = Clock()
    slot = Slot(clock)
    assert (slot.doing, slot.holder(), slot.locked()) == (None, None, False)
    assert slot.try_take("snapshot (scheduled)")
    clock.now += 12.5
    assert (slot.doing, slot.holder(), slot.locked()) == ("snapshot (scheduled)", ("snapshot (scheduled)", 12.5), True)
    assert not slot.try_take("snapshot.take")          # never two holders
    assert slot.doing == "snapshot (scheduled)"
    slot.update("snapshot (scheduled): 40 MiB written")
    clock.now += 1.0
    assert slot.holder() == ("snapshot (scheduled): 40 MiB written", 13.5)   # held since it was taken
    slot.release()
    assert (slot.doing, slot.holder(), slot.locked()) == (None, None, False)
    slot.update("ignored while free")
    assert slot.doing is None


def test_take_waits_up_to_its_timeout() -> None:
    slot = Slot()
    assert slot.take("restore.step prepare of operation r1", timeout=0)
    assert not slot.take("snapshot.take", timeout=0.05)
    assert slot.doing == "restore.step prepare of operation r1"
    slot.release()
    assert slot.take("snapshot.take", timeout=0.05) and slot.doing == "snapshot.take"
    slot.release()


def test_held_says_once_what_it_waits_for_and_always_releases() -> None:
    slot = Slot()
    assert slot.try_take("snapshot (scheduled)")
    waited: list[str] = []
    inside = threading.Event()

    def second() -> None:
        with slot.held("snapshot.take", waiting=waited.append) as held:
            assert held.doing == "snapshot.take"
            inside.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not inside.wait(0.1)                        # still held by the first
    slot.release()
    thread.join(5)
    assert inside.is_set() and waited == ["snapshot (scheduled)"]
    assert slot.doing is None and not slot.locked()

    with pytest.raises(OSError), slot.held("snapshot"):
        raise OSError("disk full")
    assert not slot.locked()                           # released on the way out
    with slot.held("snapshot", waiting=waited.append):
        pass
    assert waited == ["snapshot (scheduled)"]          # a free slot is not waited for
