"""Pure parts of the off-site vault: object names, pin verdicts, the same-data decision, the
[vault]/[vault.s3]/[bundle] config rules, age recipients and the metrics' backend label."""

from __future__ import annotations

import dataclasses
import re

import pytest
from etcdguard.agent.config import DEFAULT_BUNDLE_PATHS, parse_agent_config
from etcdguard.common.base.agekeys import check_recipients, is_age_file
from etcdguard.common.base.errors import ConfigError
from etcdguard.common.base.retention import Aged, decide
from etcdguard.common.wire.report import AgentReport
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import parse_coordinator_config
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.vault import names
from etcdguard.coordinator.vault.entry import Incoming, VaultEntry, revision_exact, same_data
from etcdguard.coordinator.vault.policy import choose_pull
from hypothesis import given
from hypothesis import strategies as st

T0 = 1_790_000_000.0
RECIPIENT = "age1" + "q" * 58
OTHER = "age1" + "p" * 58
SHA = "ab" * 32


def name(**changes):
    base = names.SnapshotName(sha256=SHA, created_unix=T0 + 0.123, revision=4711, size=123456, cluster_id="7e3a1c0f",
                              member_id="8e9e05c5", etcd_version="3.5.16", source_member="cp-2.example",
                              original_name="snap-20260921T101320.123Z-r4711.db", pulled_unix=T0 + 60,
                              revision_exact=True, encrypted=True)
    return dataclasses.replace(base, **changes)


# -- object names -------------------------------------------------------------------------


def test_snapshot_key_carries_everything_a_listing_needs():
    key = names.snapshot_key("prod/", name())
    assert key.startswith(f"prod/snapshots/{SHA}~t1790000000123~r4711~s123456~")
    assert key.endswith(".db.age")
    parsed = names.parse_key("prod/", key)
    assert parsed is not None and parsed.kind == "snapshot"
    assert parsed.snapshot == name()
    plain = names.snapshot_key("", name(encrypted=False))
    assert plain.endswith(".db") and names.parse_key("", plain).snapshot.encrypted is False


@pytest.mark.parametrize("kind", ["scheduled", "manual", "pre-restore", "point-in-time"])
def test_the_key_carries_the_kind_and_an_old_key_reads_without_one(kind):
    key = names.snapshot_key("prod/", name(kind=kind))
    assert key.endswith(f"~x1~k{kind}.db.age")
    assert names.parse_key("prod/", key).snapshot == name(kind=kind)
    old = key.replace(f"~k{kind}", "")                 # as keys were written before kinds were recorded
    assert names.parse_key("prod/", old).snapshot.kind == ""
    assert names.parse_key("prod/", key.replace(f"~k{kind}", "~khourly")) is None
    with pytest.raises(ValueError, match="kind 'hourly'"):
        names.snapshot_key("", name(kind="hourly"))


def test_the_key_carries_what_a_drill_checks_and_how_the_object_is_stored():
    n = name(kind="scheduled", hashkv=4023456789, hashkv_compact_revision=12, key_count=3021, compressed=True)
    key = names.snapshot_key("prod/", n)
    assert key.endswith("~x1~kscheduled~h4023456789~g12~n3021.db.zst.age")
    assert names.parse_key("prod/", key).snapshot == n
    plain = names.snapshot_key("prod/", dataclasses.replace(n, encrypted=False))
    assert plain.endswith(".db.zst") and names.parse_key("prod/", plain).snapshot.compressed
    old = key.replace("~h4023456789~g12~n3021", "").replace(".zst", "")   # written before either was recorded
    parsed = names.parse_key("prod/", old).snapshot
    assert (parsed.hashkv, parsed.key_count, parsed.compressed) == (None, None, False)
    no_hash = names.snapshot_key("", name(key_count=7))   # a count without a hashkv (the hash was not answered)
    assert "~h" not in no_hash and names.parse_key("", no_hash).snapshot.key_count == 7
    never = name(hashkv=5, hashkv_compact_revision=-1)          # etcd says -1 before its first compaction
    assert names.parse_key("", names.snapshot_key("", never)).snapshot == never
    with pytest.raises(ValueError, match="do not survive an object name"):
        names.snapshot_key("", name(hashkv=2**40))


@given(revision=st.integers(0, 2**63), size=st.integers(0, 2**50), member=st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True), cluster=st.from_regex(r"[0-9a-f]{0,16}", fullmatch=True),
    created_ms=st.integers(0, 10**13), exact=st.booleans(), encrypted=st.booleans(), compressed=st.booleans(),
    hashkv=st.one_of(st.none(), st.integers(0, 2**32 - 1)), keys=st.one_of(st.none(), st.integers(0, 2**40)))
def test_snapshot_names_round_trip(revision, size, member, cluster, created_ms, exact, encrypted, compressed, hashkv,
                                   keys):
    n = name(revision=revision, size=size, source_member=member, original_name=member, cluster_id=cluster,
             created_unix=created_ms / 1000, pulled_unix=created_ms / 1000, revision_exact=exact, encrypted=encrypted,
             compressed=compressed, hashkv=hashkv, hashkv_compact_revision=None if hashkv is None else revision,
             key_count=keys)
    assert names.parse_key("p/", names.snapshot_key("p/", n)) == names.Parsed("snapshot", SHA, snapshot=n)


def test_names_refuse_what_they_cannot_carry():
    with pytest.raises(ValueError, match="source_member"):
        names.snapshot_key("", name(source_member="cp~1"))
    with pytest.raises(ValueError, match="cluster_id"):
        names.snapshot_key("", name(cluster_id="not-hex"))
    assert names.clean_version("3.5.16 (linux/amd64)") == "3.5.16--linux-amd64-"
    assert names.snapshot_key("", name(etcd_version="3.5 beta")).count("~e3.5-beta~") == 1


@pytest.mark.parametrize("key", [
    "other/snapshots/x.db", "prod/snapshots/" + SHA + ".db", "prod/notes.txt", "prod/bundles/abc.tar.age",
    "prod/pins/" + SHA, "prod/snapshots/" + SHA + "~t1~r1~s1~c~m~e~fa~ob~p1~x2.db",
])
def test_keys_that_are_not_entries_are_ignored(key):
    assert names.parse_key("prod/", key) is None


def test_bundle_and_pin_keys():
    assert names.parse_key("p/", names.bundle_key("p/", SHA)) == names.Parsed("bundle", SHA)
    key = names.pin_key("p/", SHA, "pre-restore of op 20261124T0336 (cp1)")
    assert "~" not in key.split("~", 1)[1]
    assert names.parse_key("p/", key) == names.Parsed("pin", SHA, reason="pre-restore of op 20261124T0336 (cp1)")
    with pytest.raises(ValueError, match="pin reason"):
        names.pin_key("p/", SHA, "semi;colon")
    assert names.check_reason("x" * 65) is not None and names.check_reason("pre-restore") is None


def test_an_s3_error_detail_does_not_repeat_the_key():
    from botocore.exceptions import EndpointConnectionError
    from etcdguard.coordinator.vault.s3 import error_detail

    key = "prod/snapshots/" + SHA + "~t1~r2~s3~c~m~e3.5~fcp1~osnap.db~p4~x1.db"
    exc = EndpointConnectionError(endpoint_url=f"http://10.0.0.9:9000/vault/{key}?uploadId=abc&partNumber=2")
    assert error_detail(exc, "vault", key) == 'Could not connect to the endpoint URL: "http://10.0.0.9:9000"'
    boto3_style = RuntimeError(f"Failed to upload <stream> to vault/{key}: An error occurred (AccessDenied)")
    assert error_detail(boto3_style, "vault", key) == (
        "Failed to upload <stream> to the object: An error occurred (AccessDenied)")
    assert SHA not in error_detail(RuntimeError(key.replace("~", "%7E")), "vault", key)


def test_which_incomplete_uploads_are_aborted():
    from etcdguard.coordinator.vault.s3 import Upload, to_abort

    ups = [Upload("p/a", "1", T0 - 7200), Upload("p/b", "2", T0 - 60), Upload("p/c", "3", None),
           Upload("p/d", "4", T0 - 7200)]
    keys = lambda chosen: [u.key for u in chosen]   # noqa: E731
    assert keys(to_abort(ups, T0, 3600)) == ["p/a", "p/d"]                          # stale: anyone's
    assert keys(to_abort(ups, T0, 3600, failed={"p/b", "p/c"})) == ["p/a", "p/b", "p/c", "p/d"]   # ours, dead
    assert keys(to_abort(ups, T0, 3600, failed={"p/b"}, uploading={"p/b", "p/d"})) == ["p/a"]  # never a live one
    assert keys(to_abort(ups, T0, 3600, everything=True, uploading={"p/c"})) == ["p/a", "p/b", "p/d"]


# -- pinned verdicts ------------------------------------------------------------------------


def test_pinned_entries_are_kept_and_do_not_count_against_keep():
    snaps = [Aged("new", T0 + 3), Aged("pinned-old", T0, "pre-restore"), Aged("mid", T0 + 2), Aged("old", T0 + 1)]
    verdicts = {v.name: (v.keep, v.reason) for v in decide(snaps, keep=2, max_age=None, now=T0 + 10)}
    assert verdicts == {"new": (True, "newest"), "mid": (True, "within keep=2"), "old": (False, "beyond keep=2"),
                        "pinned-old": (True, "keep: pinned (pre-restore)")}


def test_a_pinned_snapshot_survives_max_age():
    verdicts = decide([Aged("a", T0 + 100), Aged("b", T0, "audit")], keep=5, max_age=10, now=T0 + 1000)
    assert [(v.name, v.keep, v.reason) for v in verdicts] == [("a", True, "newest"),
                                                                ("b", True, "keep: pinned (audit)")]


# -- the same data ---------------------------------------------------------------------------


def entry(sha="a" * 64, revision=10, cluster="c1", exact=True, created=T0):
    return VaultEntry(sha256=sha, size=1, source_member="m1", original_name="s.db", revision=revision,
                      cluster_id=cluster, member_id="m", etcd_version="3.5.16", created_at="", created_unix=created,
                      pulled_at="", pulled_unix=created, revision_exact=exact)


def test_same_cluster_and_exact_revision_is_the_same_data():
    held = [entry(revision=10), entry(sha="b" * 64, revision=12, created=T0 + 1)]
    assert same_data(held, "c1", 10, exact=True) == held[0]
    assert same_data(held, "c2", 10, exact=True) is None        # another cluster (a restore makes a new id)
    assert same_data(held, "c1", 11, exact=True) is None        # a write since
    assert same_data(held, "c1", 10, exact=False) is None       # a lower bound proves nothing
    assert same_data([entry(exact=False)], "c1", 10, exact=True) is None
    assert same_data(held, "", 0, exact=True) is None


def test_revision_exact_reads_the_agents_revision_source():
    assert revision_exact({"revision_source": "snapshot-status"})
    assert not revision_exact({"revision_source": "status-header"})
    inc = Incoming.from_agent("m2", {"sha256": SHA, "size": 5, "name": "s.db", "created_unix": T0, "revision": 3,
                                     "cluster_id": "c1", "revision_source": "status-header", "bundle": "encrypted"})
    assert (inc.revision_exact, inc.bundle) == (False, True)


def view(name_, snaps, cluster="c1", leader=False):
    report = {"agent": {"version": "0.1.0", "busy": None}, "member": {"name": name_, "data_dir": "/var/lib/etcd"},
              "etcd": {"healthy": True, "is_leader": leader, "cluster_id": cluster},
              "snapshots": [{"created_at": "-", "size": 10, **s} for s in snaps]}
    return MemberView(name_, "tcp://127.0.0.1:1", True, report=AgentReport.from_json(report))


def test_choose_pull_skips_a_snapshot_of_data_the_vault_holds():
    snap = {"name": "s-r10.db", "sha256": "f" * 64, "created_unix": T0 + 600, "revision": 10, "cluster_id": "c1",
            "revision_source": "snapshot-status"}
    choice = choose_pull([view("m2", [snap]), view("m1", [], leader=True)], lambda sha: False, {}, 3600,
                         held={("c1", 10)})
    assert choice.member is None and choice.failure is None
    assert choice.sentence.startswith("the vault already holds revision 10 of cluster c1: the newest snapshot of a "
                                      "healthy member, s-r10.db of follower m2")
    assert choice.fresh_as_of == T0 + 600
    moved = choose_pull([view("m2", [{**snap, "revision": 11}])], lambda sha: False, {}, 3600, held={("c1", 10)})
    assert moved.member == "m2" and moved.fresh_as_of is None
    bound = choose_pull([view("m2", [{**snap, "revision_source": "status-header"}])], lambda sha: False, {}, 3600,
                        held={("c1", 10)})
    assert bound.member == "m2"


# -- configuration ---------------------------------------------------------------------------


def vault_config(vault):
    return parse_coordinator_config({"vault": vault}, "c.toml").vault


def vault_error(vault):
    with pytest.raises(ConfigError) as info:
        vault_config(vault)
    assert info.value.exit_code == 2
    return str(info.value)


def test_vault_defaults_and_an_s3_table():
    d = vault_config({})
    assert (d.backend, d.encrypt_to, d.age_identity, d.s3) == ("dir", (), None, None)
    assert (d.compression, d.compression_level) == ("zstd", 1)
    off = vault_config({"compression": "none", "compression_level": 19})
    assert (off.compression, off.compression_level) == ("none", 19)
    v = vault_config({"backend": "s3", "encrypt_to": [RECIPIENT, OTHER], "age_identity": "/etc/etcdguard/keys/v.age",
                      "s3": {"bucket": "etcd-backups", "endpoint": "https://minio.example:9000/", "region": "eu-west-1",
                             "prefix": "prod", "path_style": True, "credentials_file": "/etc/etcdguard/keys/s3",
                             "profile": "backup", "sse": "aws:kms", "sse_kms_key_id": "alias/etcd",
                             "ca_bundle": "/etc/ssl/minio.pem", "part_size": 8 << 20, "storage_class": "STANDARD_IA"}})
    assert v.backend == "s3" and v.encrypt_to == (RECIPIENT, OTHER)
    assert v.s3 is not None
    assert (v.s3.endpoint, v.s3.prefix, v.s3.path_style, v.s3.part_size) == (
        "https://minio.example:9000", "prod/", True, 8 << 20)
    assert (v.s3.connect_timeout, v.s3.read_timeout, v.s3.max_attempts) == (5.0, 30.0, 3)
    assert v.s3.abort_incomplete_after == 3600.0
    bounded = vault_config({"backend": "s3", "s3": {"bucket": "b-1", "connect_timeout": "2s", "read_timeout": "1m",
                                                    "max_attempts": 1}})
    assert bounded.s3 is not None
    assert (bounded.s3.connect_timeout, bounded.s3.read_timeout, bounded.s3.max_attempts) == (2.0, 60.0, 1)


@pytest.mark.parametrize(("vault", "words"), [
    ({"backend": "nfs"}, "vault.backend: expected one of 'dir', 's3'"),
    ({"backend": "s3"}, "needs a [vault.s3] table"),
    ({"encrypt_to": ["age1short"]}, "vault.encrypt_to: expected age recipients"),
    ({"encrypt_to": ["AGE-SECRET-KEY-1" + "Q" * 58]}, "that is a secret key"),
    ({"encrypt_to": [RECIPIENT, RECIPIENT]}, "listed twice"),
    ({"age_identity": "keys/v.age"}, "vault.age_identity: expected an absolute path"),
    ({"s3": {}}, "vault.s3.bucket: expected an S3 bucket name"),
    ({"s3": {"bucket": "Bad_Bucket"}}, "vault.s3.bucket"),
    ({"s3": {"bucket": "b-1", "endpoint": "minio:9000"}}, "vault.s3.endpoint: expected an http:// or https:// URL"),
    ({"s3": {"bucket": "b-1", "prefix": "/abs"}}, "vault.s3.prefix"),
    ({"s3": {"bucket": "b-1", "sse": "yes"}}, "vault.s3.sse: expected one of 'AES256', 'aws:kms'"),
    ({"s3": {"bucket": "b-1", "sse_kms_key_id": "k"}}, "sse_kms_key_id: expected nothing unless sse = 'aws:kms'"),
    ({"s3": {"bucket": "b-1", "part_size": 1024}}, "vault.s3.part_size: expected an integer >= 5242880"),
    ({"s3": {"bucket": "b-1", "profile": "p"}}, "vault.s3.profile: expected nothing unless credentials_file"),
    ({"s3": {"bucket": "b-1", "secret_access_key": "x"}}, "unknown key(s) in [vault.s3]: secret_access_key"),
    ({"s3": {"bucket": "b-1", "read_timeout": "0s"}}, "vault.s3.read_timeout: expected a positive duration"),
    ({"s3": {"bucket": "b-1", "connect_timeout": "1h"}}, "vault.s3.connect_timeout: expected a duration of at most"),
    ({"s3": {"bucket": "b-1", "max_attempts": 0}}, "vault.s3.max_attempts: expected an integer >= 1"),
    ({"s3": {"bucket": "b-1", "max_attempts": 50}}, "vault.s3.max_attempts: expected an integer from 1 to 10"),
    ({"s3": {"bucket": "b-1", "abort_incomplete_after": "30s"}},
     "vault.s3.abort_incomplete_after: expected a duration of at least 60s"),
    ({"encrypt": True}, "unknown key(s) in [vault]: encrypt"),
    ({"compression": "gzip"}, "vault.compression: expected one of 'zstd', 'none'"),
    ({"compression_level": 22}, "vault.compression_level: expected a zstd level from 1 (fastest) to 19"),
    ({"compression_level": 0}, "vault.compression_level: expected an integer >= 1"),
])
def test_vault_config_errors_name_the_key(vault, words):
    assert words in vault_error(vault)


def test_bundle_config():
    b = parse_agent_config({}, "a.toml").bundle
    assert (b.enabled, b.paths, b.encrypt_to) == (True, DEFAULT_BUNDLE_PATHS, ())
    b = parse_agent_config({"bundle": {"paths": ["/etc/kubernetes/pki"], "encrypt_to": [RECIPIENT],
                                       "enabled": False}}, "a.toml").bundle
    assert (b.enabled, [str(p) for p in b.paths], b.encrypt_to) == (False, ["/etc/kubernetes/pki"], (RECIPIENT,))
    for bad, words in (({"paths": ["etc/pki"]}, "bundle.paths: expected absolute paths"),
                       ({"encrypt_to": ["ssh-ed25519 AAAA"]}, "bundle.encrypt_to: expected age recipients"),
                       ({"recipients": []}, "unknown key(s) in [bundle]: recipients")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_agent_config({"bundle": bad}, "a.toml")


def test_recipient_and_age_file_checks():
    assert check_recipients([RECIPIENT]) is None
    assert "is not one" in (check_recipients(["age1" + "b" * 58]) or "")   # 'b' is not bech32
    assert is_age_file(b"age-encryption.org/v1\n-> X25519 ...")
    assert not is_age_file(b"\x00" * 32)


# -- metrics ---------------------------------------------------------------------------------


def test_vault_metrics_carry_the_backend_and_follow_a_change():
    m = CoordinatorMetrics(backend="s3")
    m.interval.set(3600)
    m.record_backend_failure("upload", "credentials")
    m.record_failure("backend")
    seen = [None]
    m.offsite_source = lambda: seen[0]
    text = m.render().decode()
    assert 'etcdguard_vault_interval_seconds{backend="s3"} 3600.0' in text
    assert 'etcdguard_vault_backend_failures_total{backend="s3",op="upload",reason="credentials"} 1.0' in text
    assert 'etcdguard_vault_failures_total{backend="s3",reason="backend"} 1.0' in text
    assert 'etcdguard_vault_offsite_age_seconds{backend="s3"} +Inf' in text
    seen[0] = 1e9
    assert 'etcdguard_vault_offsite_last_success_timestamp_seconds{backend="s3"} 1e+09' in m.render().decode()
    m.set_backend("dir")
    m.interval.set(60)
    text = m.render().decode()
    assert 'backend="s3"' not in text
    assert 'etcdguard_vault_interval_seconds{backend="dir"} 60.0' in text



# -- the catalog: the last listing, for answers that must not wait ----------------------------------


def test_the_catalog_keeps_the_last_listing_beside_a_failure():
    from etcdguard.coordinator.vault.catalog import FAILED, OK, PENDING, Catalog, stale

    now = [T0]
    catalog = Catalog(clock=lambda: now[0])
    old, new = entry("aa" * 32, revision=1, created=T0 + 1), entry("bb" * 32, revision=2, created=T0 + 2)
    assert catalog.view().state == PENDING and not catalog.view().known
    catalog.put(new)                           # before any listing the rest is unknown: nothing is shown
    assert catalog.view().entries == ()
    assert stale(catalog.view(), now[0], 5)
    catalog.asking()
    assert not stale(catalog.view(), now[0], 5)   # one listing at a time
    catalog.answered([old])
    assert catalog.view().state == OK and catalog.view().listed_at == T0 and catalog.view().asking_since is None
    catalog.put(new)
    assert [e.sha256 for e in catalog.view().entries] == [new.sha256, old.sha256]
    now[0] += 60
    failed = catalog.failed("s3://b/: listing failed: read timeout")
    assert failed.state == FAILED and failed.listed_at == T0 and failed.failed_at == T0 + 60
    assert [e.sha256 for e in failed.entries] == [new.sha256, old.sha256]   # not "empty"
    report = failed.to_json(T0 + 70)
    assert report == {"state": "failed", "listed_at": T0, "age_seconds": 70.0, "error": failed.error,
                      "failed_at": T0 + 60, "asking_seconds": None}
    assert not stale(failed, T0 + 62, 5) and stale(failed, T0 + 65, 5)
    catalog.drop(new.sha256)
    assert catalog.wait_past(failed.generation - 1, 0).entries == (old,)
    assert catalog.answered([]).state == OK and catalog.view().error is None
    # a listing that started before the coordinator's own change answers without it: the change is kept
    started = catalog.asking()
    now[0] += 1
    catalog.put(new)
    catalog.drop(old.sha256)
    assert [e.sha256 for e in catalog.answered([old], started).entries] == [new.sha256]
    now[0] += 1                                    # a later listing shows the bucket as it is
    assert [e.sha256 for e in catalog.answered([old], catalog.asking()).entries] == [old.sha256]



# -- failed copies: what status shows, and the retry -------------------------------------------------


def test_a_failure_is_shown_until_a_copy_succeeds_and_the_retry_backs_off_to_the_interval():
    import random

    from etcdguard.coordinator.vault.attempts import BACKUP, SCHEDULED, Attempt, CopyRecord
    from etcdguard.coordinator.vault.policy import next_pull_due, retry_now

    rng = random.Random(1)
    record = CopyRecord()
    hourly = 5000.0
    assert next_pull_due(record.view(), hourly, 100, 3600, rng) == hourly
    first = record.failed(BACKUP, "backend", "backup on m1: uploading ... failed", "m1")
    assert (first.failures, first.failing_since, first.failing is first.last) == (1, first.last.at, True)
    assert next_pull_due(first, hourly, 100, 3600, rng) == 130           # a failed backup is retried in 30 s
    again = record.failed(SCHEDULED, "backend", "uploading ... failed")
    assert (again.failures, again.failing_since) == (2, first.failing_since)
    assert next_pull_due(again, 130, 130, 3600, rng) == 190             # then 60 s, 120 s, ...
    many = record.view()
    for _ in range(10):
        many = record.failed(SCHEDULED, "unreachable", "no agent answered")
    assert next_pull_due(many, 0, 1000, 3600, rng) == 1000 + 3600       # never later than the interval
    ok = record.succeeded(BACKUP, "backup on m1", "m1", "ab" * 32)
    assert (ok.failing, ok.failures, ok.ended) == (None, 0, 12)
    assert 1000 + 3420 <= next_pull_due(ok, 1010, 1000, 3600, rng) <= 1000 + 3780   # the interval again
    calm = record.succeeded(BACKUP, "backup on m1", "m1", "cd" * 32)
    assert next_pull_due(calm, 1234, 1000, 3600, rng) == 1234          # nothing was failing: schedule kept
    assert calm.to_json()["last_failure"] is None and calm.to_json()["last_pull"]["sha256"] == "cd" * 32

    failing = Attempt(at=T0, ok=False, kind=BACKUP, message="x", reason="backend")
    assert retry_now(failing, T0 + 5) and not retry_now(failing, T0 - 5) and not retry_now(failing, None)
    assert not retry_now(Attempt(at=T0, ok=False, kind=BACKUP, message="x", reason="unreachable"), T0 + 5)
    assert not retry_now(None, T0 + 5)



# -- verifying a copy at plan time: its metadata and the coordinator's own record ---------------------


def test_a_copy_is_checked_against_its_metadata_and_the_recorded_fingerprint(tmp_path):
    from etcdguard.coordinator.vault.verified import (
        Fingerprint,
        ObjectRecords,
        ObjectStat,
        fingerprint_problem,
        metadata_problem,
    )

    e = entry(SHA).with_(size=100)
    good = ObjectStat(tag="etag-1", size=100, snapshot_sha256=SHA, content_sha256=SHA, recorded_size="100")
    assert metadata_problem(e, good) is None
    assert "no snapshot sha256" in metadata_problem(e, dataclasses.replace(good, snapshot_sha256=None))
    assert "another snapshot's" in metadata_problem(e, dataclasses.replace(good, snapshot_sha256="cd" * 32))
    assert "content sha256" in metadata_problem(e, dataclasses.replace(good, content_sha256=None))
    assert "101 bytes" in metadata_problem(e, dataclasses.replace(good, recorded_size="101"))
    sealed = e.with_(encrypted=True)   # ciphertext: another size, no content sha256
    assert metadata_problem(sealed, dataclasses.replace(good, size=350, content_sha256=None)) is None

    records = ObjectRecords(tmp_path / "state" / "vault-objects.json")
    assert records.get("s3://b/p/", SHA) is None
    records.put("s3://b/p/", SHA, Fingerprint.of(good, "uploaded", at=T0))
    again = ObjectRecords(records.path)           # read back from the file, as after a restart
    known = again.get("s3://b/p/", SHA)
    assert known == Fingerprint("etag-1", 100, T0, "uploaded") and again.get("s3://other/", SHA) is None
    assert fingerprint_problem(e, good, known, records.path) is None
    changed = fingerprint_problem(e, dataclasses.replace(good, tag="etag-2"), known, records.path)
    assert "changed since the coordinator uploaded it" in changed and str(records.path) in changed
    again.drop("s3://b/p/", SHA)
    assert ObjectRecords(records.path).get("s3://b/p/", SHA) is None
    records.path.write_text("{not json")
    assert ObjectRecords(records.path).get("s3://b/p/", SHA) is None   # unreadable: nothing trusted
