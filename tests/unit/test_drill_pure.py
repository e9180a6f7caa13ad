"""Restore drills as data: the checks against what was recorded, the verdict and its reason, what is drilled
and when, the [drill] config, the records kept across restarts, and the metrics (pure, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etcdguard.common.base.errors import ConfigError
from etcdguard.coordinator.config import DrillSettings, parse_coordinator_config
from etcdguard.coordinator.drill import policy
from etcdguard.coordinator.drill.checks import (
    HASHKV,
    KEY_COUNT,
    REVISION,
    SAMPLE,
    Check,
    DrillResult,
    Observed,
    Recorded,
    judge,
    verdict,
)
from etcdguard.coordinator.drill.records import DrillRecords
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.vault.entry import VaultEntry

SHA = "5d" * 32
T0 = 1_790_000_000.0


def recorded(**kw) -> Recorded:
    base = dict(sha256=SHA, size=1000, revision=48188, revision_exact=True, hashkv=4023456789,
                hashkv_compact_revision=47000, key_count=3021)
    return Recorded(**{**base, **kw})


def observed(**kw) -> Observed:
    base = dict(revision=48188, key_count=3021, hashkv=4023456789, hashkv_compact_revision=47000, sampled=64)
    return Observed(**{**base, **kw})


def test_a_store_that_matches_every_recorded_fact_passes():
    checks = judge(recorded(), observed())
    assert [c.name for c in checks] == ["serves", "revision", "key_count", "hashkv", "sample"]
    assert all(c.ok for c in checks)
    ok, reason, message = verdict(SHA, checks)
    assert (ok, reason) == (True, None)
    assert message == f"snapshot {SHA[:12]} restored, served and matched what was recorded"


@pytest.mark.parametrize(("seen", "reason", "words"), [
    (observed(revision=48100), REVISION, "the restored store is at revision 48100, the snapshot was recorded at 48188"),
    (observed(key_count=3020), KEY_COUNT, "holds 3020 keys at revision 48188, the member held 3021"),
    (observed(hashkv=1), HASHKV, "hashkv at revision 48188 is 1, the member's was 4023456789: the snapshot does "
                                 "not hold the data it was taken with"),
    (observed(hashkv_compact_revision=48000), HASHKV, "compacted at revision 48000, the member's hash counted from "
                                                      "47000"),
    (observed(sample_problems=("/registry/pods/a: not found",)), SAMPLE, "1 of 64 sampled keys did not read back: "
                                                                         "/registry/pods/a: not found"),
    (observed(sampled=0), SAMPLE, "the store counts keys but listed none"),
])
def test_each_mismatch_fails_the_drill_with_its_reason_and_says_what_differs(seen, reason, words):
    ok, why, message = verdict(SHA, judge(recorded(), seen))
    assert (ok, why) == (False, reason)
    assert message.startswith(f"snapshot {SHA[:12]} is not restorable as recorded: ") and words in message


def test_facts_not_recorded_are_not_checked_and_the_verdict_says_so():
    old = recorded(hashkv=None, hashkv_compact_revision=None, key_count=None)
    checks = judge(old, observed(hashkv=7, key_count=3))
    assert {c.name: c.ok for c in checks} == {"serves": True, "revision": True, "key_count": None, "hashkv": None,
                                              "sample": True}
    ok, reason, message = verdict(SHA, checks)
    assert ok and reason is None
    assert message.endswith("(key_count, hashkv not recorded at take time, not checked)")
    assert "hashkv was not recorded" in next(c.detail for c in checks if c.name == "hashkv")
    lower_bound = judge(recorded(revision_exact=False), observed(revision=48200))
    assert next(c for c in lower_bound if c.name == "revision").ok is None


def test_a_result_reads_back_as_it_was_written(tmp_path: Path):
    checks = (Check("hashkv", False, "d"), Check("key_count", None, "n"))
    result = DrillResult(sha256=SHA, kind="scheduled", revision=5, started_at=T0, seconds=4.2, ok=False,
                         reason=HASHKV, message="m", checks=checks, cleanup="gone", unchecked=("key_count",))
    assert DrillResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    with pytest.raises(ValueError, match="lacks or mistypes"):
        DrillResult.from_json({"sha256": SHA})


def entry(sha: str, kind: str, revision: int) -> VaultEntry:
    return VaultEntry(sha256=sha, size=10, source_member="m1", original_name="s.db", revision=revision,
                      cluster_id="c1", member_id="a1", etcd_version="3.5.30", created_at="", created_unix=T0 + revision,
                      pulled_at="", pulled_unix=T0 + revision, kind=kind)


def test_the_newest_scheduled_or_manual_entry_and_the_newest_point_in_time_one_are_drilled():
    entries = [entry("a" * 64, "scheduled", 10), entry("b" * 64, "manual", 20), entry("c" * 64, "pre-restore", 30),
               entry("d" * 64, "point-in-time", 25), entry("e" * 64, "point-in-time", 15)]
    assert [e.sha256[0] for e in policy.choose(entries)] == ["b", "d"]
    assert [e.sha256[0] for e in policy.choose(entries[:3])] == ["b"]
    assert policy.choose([entries[2]]) == []


def test_availability_says_why_drills_do_not_run():
    on = policy.availability(DrillSettings(), None, "/usr/bin/etcd and /usr/bin/etcdutl")
    assert (on.wanted, on.runnable, on.scheduled, on.sentence) == (True, True, True,
                                                                  "on, with /usr/bin/etcd and /usr/bin/etcdutl")
    auto = policy.availability(DrillSettings(), "no etcd server on the coordinator host: install etcd")
    assert (auto.wanted, auto.scheduled) == (False, False) and auto.sentence.startswith("off: no scratch etcd")
    wanted = policy.availability(DrillSettings(enabled=True), "no etcd server on the coordinator host")
    assert (wanted.wanted, wanted.runnable) == (True, False)
    assert wanted.sentence == "CANNOT RUN ([drill] enabled = true): no etcd server on the coordinator host"
    assert not policy.availability(DrillSettings(interval=0), None).wanted
    assert not policy.availability(DrillSettings(enabled=False), None).wanted


def test_when_drills_are_due():
    day = 86400.0
    assert policy.first_due(None, day, T0, 100.0) == 100.0                       # never: at once
    assert policy.first_due(T0 - 2 * day, day, T0, 100.0) == 100.0              # too long ago: at once
    assert policy.first_due(T0 - 3600, day, T0, 100.0) == pytest.approx(100.0 + day - 3600)
    assert policy.first_due(T0 + 999, day, T0, 100.0) == 100.0                  # stamped in the future
    chosen = [entry("a" * 64, "scheduled", 1)]
    assert policy.drill_now(chosen, {"b" * 64}, last_round_failed=True)         # a new snapshot after a failure
    assert not policy.drill_now(chosen, {"a" * 64}, last_round_failed=True)     # the failed one again: wait
    assert not policy.drill_now(chosen, set(), last_round_failed=False)


def test_drill_config():
    d = parse_coordinator_config({}, "c.toml").drill
    assert (d.interval, d.enabled, d.sample_keys) == (86400.0, None, 64)
    s = parse_coordinator_config({"drill": {"interval": "6h", "enabled": True, "sample_keys": 10}}, "c.toml").drill
    assert (s.interval, s.enabled, s.sample_keys) == (21600.0, True, 10)
    assert parse_coordinator_config({"drill": {"interval": "0"}}, "c.toml").drill.interval == 0.0
    for bad, words in (({"interval": "soon"}, "drill.interval"), ({"enabled": "yes"}, "drill.enabled: expected true"),
                       ({"sample_keys": 0}, "drill.sample_keys: expected an integer >= 1"),
                       ({"when": "daily"}, "unknown key(s) in [drill]: when")):
        with pytest.raises(ConfigError) as info:
            parse_coordinator_config({"drill": bad}, "c.toml")
        assert words in str(info.value)


def result(sha: str, ok: bool, at: float) -> DrillResult:
    return DrillResult(sha256=sha, kind="scheduled", revision=1, started_at=at, seconds=1.0, ok=ok,
                       reason=None if ok else HASHKV, message="m")


def test_records_keep_each_entrys_proof_beside_a_later_failure_across_restarts(tmp_path: Path):
    records = DrillRecords(tmp_path / "state" / "drills.json")
    records.record(result("a" * 64, True, T0))
    records.record(result("a" * 64, False, T0 + 100))
    records.record(result("b" * 64, True, T0 + 200))
    again = DrillRecords(tmp_path / "state" / "drills.json")
    a = again.of("a" * 64)
    assert a is not None and (a.last.ok, a.proven_at) == (False, T0)
    assert again.last_success_at == T0 + 200 and again.last == result("b" * 64, True, T0 + 200)
    (tmp_path / "state" / "drills.json").write_text("{torn")
    empty = DrillRecords(tmp_path / "state" / "drills.json")
    assert empty.last is None and empty.snapshot() == {}


def test_drill_metrics():
    m = CoordinatorMetrics()
    text = m.render().decode()
    assert "etcdguard_drill_last_result -1.0" in text and "etcdguard_drill_age_seconds +Inf" in text
    assert 'etcdguard_drill_failures_total{reason="hashkv"} 0.0' in text
    m.record_drill(False, "hashkv", 3.5, None)
    m.record_drill(True, "other", 4.0, T0)
    text = m.render().decode()
    assert 'etcdguard_drill_failures_total{reason="hashkv"} 1.0' in text
    assert "etcdguard_drill_last_result 1.0" in text
    assert "etcdguard_drill_last_success_timestamp_seconds 1.79e+09" in text
    assert "etcdguard_drill_duration_seconds_count 2.0" in text


def test_coordinator_check_says_whether_drills_can_run_here(tmp_path: Path):
    from etcdguard.coordinator.checks import drill_check

    def config(drill: dict, scratch: dict) -> object:
        return parse_coordinator_config({"coordinator": {"state_dir": str(tmp_path)}, "drill": drill,
                                         "scratch": scratch}, "c.toml")

    missing = {"etcd": str(tmp_path / "no-etcd")}
    wanted = drill_check(config({"enabled": True}, missing))
    assert not wanted.ok and wanted.detail.startswith("CANNOT RUN ([drill] enabled = true)")
    assert "install etcd-server" in wanted.hint
    auto = drill_check(config({}, missing))
    assert auto.ok and auto.warning and auto.detail.startswith("off: no scratch etcd on this host")
    off = drill_check(config({"enabled": False}, missing))
    assert off.ok and not off.warning and off.detail.startswith("off: [drill] enabled = false")
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, out in (("etcd", "etcd Version: 3.5.30"), ("etcdutl", "etcdutl version: 3.5.30")):
        (fake / name).write_text(f"#!/bin/sh\necho '{out}'\necho 'Git SHA: x'\n")
        (fake / name).chmod(0o755)
    on = drill_check(config({"interval": "6h"}, {"etcd": str(fake / "etcd")}))
    assert on.ok and not on.warning and on.detail.startswith(f"on, with {fake / 'etcd'} and {fake / 'etcdutl'}")
    assert on.detail.endswith("every 6h00m"), on.detail


def test_the_drill_command_line_names_one_snapshot_or_one_point():
    import argparse

    import pytest
    from etcdguard.common.base.errors import UsageError
    from etcdguard.coordinator.ctl.drill import drill_request

    def ns(snapshot=None, to_revision=None, to_time=None):
        return argparse.Namespace(snapshot=snapshot, to_revision=to_revision, to_time=to_time)

    now = 1_800_000_000.0
    assert drill_request(ns(), now) == {}
    assert drill_request(ns(snapshot="5d0b8c"), now) == {"id": "5d0b8c"}
    assert drill_request(ns(to_revision=4242), now) == {"to_revision": 4242}
    assert drill_request(ns(to_time="5m ago"), now) == {"to_time": now - 300}
    with pytest.raises(UsageError, match="not SNAPSHOT and --to-revision"):
        drill_request(ns(snapshot="latest", to_revision=7), now)
    with pytest.raises(UsageError, match="--to-revision"):
        drill_request(ns(to_revision=0), now)
