import random

from etcdguard.common.base import schedule
from etcdguard.common.base.retention import Aged, decide

NOW = 1_800_000_000.0


def snaps(ages_hours):
    return [Aged(f"s{i}", NOW - h * 3600) for i, h in enumerate(ages_hours)]


def test_keep_n_newest():
    verdicts = decide(snaps([5, 1, 3, 2, 4]), keep=3, max_age=None, now=NOW)
    kept = [v.name for v in verdicts if v.keep]
    assert kept == ["s1", "s3", "s2"]
    assert [v.reason for v in verdicts if not v.keep] == ["beyond keep=3", "beyond keep=3"]


def test_max_age_drops_old_but_never_the_newest():
    verdicts = decide(snaps([50, 60, 70]), keep=24, max_age=24 * 3600, now=NOW)
    assert [(v.name, v.keep) for v in verdicts] == [("s0", True), ("s1", False), ("s2", False)]
    assert verdicts[0].reason == "newest"
    assert "max_age=1d00h" in verdicts[1].reason


def test_keep_one_keeps_exactly_one():
    verdicts = decide(snaps([1, 2]), keep=1, max_age=None, now=NOW)
    assert [v.keep for v in verdicts] == [True, False]


def test_empty():
    assert decide([], keep=3, max_age=10, now=NOW) == []


def test_schedule_first_due():
    assert schedule.first_due(None, 3600, NOW) == NOW
    assert schedule.first_due(NOW - 7200, 3600, NOW) == NOW
    assert schedule.first_due(NOW - 600, 3600, NOW) == NOW - 600 + 3600


def test_schedule_jitter_is_bounded():
    rng = random.Random(7)
    dues = [schedule.after_success(NOW, 3600, rng) - NOW for _ in range(500)]
    assert min(dues) >= 3600 - 180 and max(dues) <= 3600 + 180
    assert max(dues) - min(dues) > 60  # it does spread


def test_failure_backoff_grows_and_caps():
    delays = [schedule.after_failure(NOW, 600, n) - NOW for n in range(1, 7)]
    assert delays == [30, 60, 120, 240, 480, 600]
