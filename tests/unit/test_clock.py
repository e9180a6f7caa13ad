"""Wall-clock stamps are not trusted (issue 9 item 12): newest by revision, schedule on the monotonic clock,
an age that is never negative nor frozen, future stamps counted. Pure functions with explicit clocks."""

from __future__ import annotations

import math

from etcdguard.agent.metrics import AgentMetrics
from etcdguard.common.base import schedule
from etcdguard.common.base.freshness import Freshness, future_dated
from etcdguard.common.base.retention import Aged, Facts, decide, newest_first
from etcdguard.coordinator.vault.pulls import fresh_as_of

NOW = 1_800_000_000.0
DAY = 86400.0


def test_snapshots_stamped_in_the_future_do_not_push_out_the_one_just_taken() -> None:
    # r10 and r20 were taken before the clock was stepped back a day; r30 was just taken.
    snaps = [Aged("r10", NOW + DAY - 7200, revision=10, cluster="c1"),
             Aged("r20", NOW + DAY - 3600, revision=20, cluster="c1"),
             Aged("r30", NOW, revision=30, cluster="c1")]
    verdicts = decide(snaps, keep=2, max_age=None, now=NOW)
    assert [(v.name, v.keep) for v in verdicts] == [("r30", True), ("r20", True), ("r10", False)]
    assert verdicts[0].reason == "newest"


def test_a_future_stamp_is_never_older_than_max_age() -> None:
    snaps = [Aged("new", NOW, revision=30), Aged("ahead", NOW + DAY, revision=20)]
    assert all(v.keep for v in decide(snaps, keep=5, max_age=60, now=NOW))


def test_clusters_rank_by_their_latest_snapshot_then_revision() -> None:
    # After a restore on etcd 3.4 (no revision bump) the new cluster's revisions are lower.
    old = [Facts("old", 900, NOW - 3 * DAY, "o1"), Facts("old", 950, NOW - 2 * DAY, "o2")]
    new = [Facts("new", 40, NOW - DAY, "n1"), Facts("new", 60, NOW - 60, "n2")]
    assert [f.name for f in newest_first(old + new, lambda f: f)] == ["n2", "n1", "o2", "o1"]
    # within one cluster the revision decides, whatever the stamps say
    skewed = [Facts("c", 5, NOW + DAY, "a"), Facts("c", 7, NOW, "b")]
    assert [f.name for f in newest_first(skewed, lambda f: f)] == ["b", "a"]


def test_schedule_with_a_future_stamp_is_due_now() -> None:
    assert schedule.first_due(NOW + DAY, 3600, NOW) == NOW
    assert schedule.age_of(NOW + DAY, NOW) is None
    assert schedule.age_of(NOW + 30, NOW) == 0.0            # clock noise, not a stepped clock
    assert schedule.age_of(NOW - 600, NOW) == 600
    mono = 5000.0
    assert schedule.first_due_monotonic(None, 3600, mono) == mono
    assert schedule.first_due_monotonic(600, 3600, mono) == mono + 3000
    assert schedule.first_due_monotonic(7200, 3600, mono) == mono


class Clock:
    def __init__(self, wall: float, mono: float) -> None:
        self.wall, self.mono = wall, mono

    def step(self, wall: float = 0.0, mono: float = 0.0) -> None:
        self.wall += wall
        self.mono += mono


def test_the_age_grows_on_the_monotonic_clock() -> None:
    c = Clock(NOW, 100.0)
    f = Freshness(lambda: c.wall, lambda: c.mono)
    assert f.age() == math.inf
    assert f.record("s1", NOW - 600)
    assert f.age() == 600
    c.step(wall=-DAY, mono=60)           # the wall clock is stepped back a day: the age still grows
    assert f.age() == 660
    assert not f.record("s1", NOW - 600)  # the same snapshot again: not re-anchored
    assert f.age() == 660
    assert f.record("ahead", c.wall + DAY)   # stamped in the future: 0, then growing
    c.step(mono=3600)
    assert f.age() == 3600


def test_agent_metrics_age_and_future_dated() -> None:
    c = Clock(NOW, 100.0)
    m = AgentMetrics(wall=lambda: c.wall, mono=lambda: c.mono)
    m.record_success(NOW + DAY, 10, 20, name="ahead")
    m.record_store([NOW + DAY, NOW + DAY - 60, NOW - 30])
    c.step(mono=7200)
    reg = m.registry
    assert reg.get_sample_value("etcdguard_backup_age_seconds") == 7200   # not 0: staleness shows
    assert reg.get_sample_value("etcdguard_snapshots_future_dated") == 2
    m.record_success(NOW, 10, 30, name="new")   # a new newest (by revision), stamped sanely
    assert reg.get_sample_value("etcdguard_backup_age_seconds") == 0
    assert reg.get_sample_value("etcdguard_backup_last_revision") == 30
    assert future_dated([NOW + 61, NOW + 59], NOW) == 1


def test_the_vaults_freshness_ignores_a_future_stamp_once_a_sane_one_is_known() -> None:
    assert fresh_as_of(NOW + DAY, NOW - 60, NOW) == NOW - 60
    assert fresh_as_of(NOW - 600, NOW - 60, NOW) == NOW - 60
    assert fresh_as_of(NOW - 600, None, NOW) == NOW - 600
    assert fresh_as_of(NOW + DAY, None, NOW) == NOW + DAY   # nothing else known: counted (and alerted on)
