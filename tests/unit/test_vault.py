"""The vault (content-addressed store, resolve, retention, atomic pulls) and the daemon's
pure decisions about what goes into it."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdUnavailable, SnapshotCorrupt, UnsafeRefusal, UsageError
from etcdguard.common.wire.report import AgentReport
from etcdguard.coordinator.agents.view import MemberView, cluster_summary
from etcdguard.coordinator.vault.policy import choose_backup_member, choose_pull
from etcdguard.coordinator.vault.store import Incoming, Vault, VaultDiskError, VaultEntry, resolve_ref

T0 = 1_790_000_000.0


def snapshot_bytes(seed: str, size: int = 4096) -> bytes:
    """A file that passes etcd's trailer check: body + sha256(body)."""
    body = (seed.encode() * (size // max(1, len(seed)) + 1))[:size]
    return body + hashlib.sha256(body).digest()


def incoming_for(data: bytes, member: str = "m2", created: float = T0, revision: int = 7) -> Incoming:
    return Incoming(sha256=hashlib.sha256(data).hexdigest(), size=len(data), source_member=member,
                    original_name=f"snap-{int(created)}-r{revision}.db", revision=revision, cluster_id="cafe",
                    member_id="beef", etcd_version="3.5.16", created_at="2026-09-21T10:13:20Z",
                    created_unix=created)


def writer(data: bytes):
    def fetch(dest: Path) -> None:
        with fsutil.atomic_writer(dest) as fh:
            fh.write(data)
    return fetch


@pytest.fixture
def vault(tmp_path) -> Vault:
    v = Vault(tmp_path / "vault")
    v.prepare()
    return v


def add(vault: Vault, seed: str, created: float = T0, member: str = "m2") -> VaultEntry:
    data = snapshot_bytes(seed)
    entry, pulled = vault.pull(incoming_for(data, member, created), writer(data), verify=True)
    assert pulled
    return entry


# -- storing and listing --------------------------------------------------------


def test_pull_stores_by_sha256_with_metadata(vault):
    data = snapshot_bytes("a")
    sha = hashlib.sha256(data).hexdigest()
    entry, pulled = vault.pull(incoming_for(data), writer(data), verify=True, now=lambda: T0 + 5)
    assert pulled
    assert entry.path == str(vault.dir / f"{sha}.db")
    assert Path(entry.path).read_bytes() == data
    assert stat.S_IMODE(os.stat(entry.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(vault.dir).st_mode) == 0o700
    meta = json.loads((vault.dir / f"{sha}.json").read_text())
    assert meta["sha256"] == sha
    assert meta["size"] == len(data)
    assert meta["member"] == "m2"
    assert meta["original_name"] == f"snap-{int(T0)}-r7.db"
    assert (meta["revision"], meta["cluster_id"], meta["etcd_version"]) == (7, "cafe", "3.5.16")
    assert meta["created_unix"] == T0 and meta["pulled_unix"] == T0 + 5
    assert meta["pulled_at"] == "2026-09-21T14:13:25Z"
    assert "path" not in meta
    assert vault.list() == [entry]
    assert sorted(p.name for p in vault.dir.iterdir()) == [f"{sha}.db", f"{sha}.json"]


def test_same_snapshot_is_stored_once_and_not_fetched_again(vault):
    data = snapshot_bytes("a")
    first, _ = vault.pull(incoming_for(data), writer(data))

    def must_not_fetch(dest: Path) -> None:
        raise AssertionError("fetched a snapshot the vault already has")

    again, pulled = vault.pull(incoming_for(data, member="m3"), must_not_fetch)
    assert not pulled
    assert again == first
    assert len(vault.list()) == 1


def test_list_is_newest_first_by_when_taken(vault):
    old = add(vault, "old", T0)
    new = add(vault, "new", T0 + 100)
    mid = add(vault, "mid", T0 + 50)
    assert [e.sha256 for e in vault.list()] == [new.sha256, mid.sha256, old.sha256]
    assert vault.newest() == new


def test_reopened_vault_lists_the_same(vault):
    entries = [add(vault, s, T0 + i) for i, s in enumerate("abc")]
    again = Vault(vault.dir)
    assert again.prepare() == []
    assert again.list() == sorted(entries, key=lambda e: e.created_unix, reverse=True)


# -- atomicity ------------------------------------------------------------------


def test_failed_fetch_leaves_nothing(vault):
    data = snapshot_bytes("a")

    def dies_midway(dest: Path) -> None:
        with open(dest, "wb") as fh:
            fh.write(data[:100])
        raise SnapshotCorrupt("agent went away")

    with pytest.raises(SnapshotCorrupt):
        vault.pull(incoming_for(data), dies_midway)
    assert list(vault.dir.iterdir()) == []
    assert vault.list() == []


def test_wrong_size_or_hash_is_refused_and_removed(vault):
    data = snapshot_bytes("a")
    with pytest.raises(SnapshotCorrupt, match=r"received 4127 bytes .* expected 4128"):
        vault.pull(incoming_for(data), writer(data[:-1]))
    other = snapshot_bytes("b")
    with pytest.raises(SnapshotCorrupt, match="sha256"):
        vault.pull(incoming_for(data), writer(other), verify=True)
    assert list(vault.dir.iterdir()) == []


def test_prepare_cleans_temps_and_half_committed_entries(vault):
    keep = add(vault, "keep")
    # a pull that crashed while writing: its temp file
    (vault.dir / f"{fsutil.TEMP_PREFIX}123-456.partial").write_bytes(b"x" * 10)
    # a pull that crashed between renaming the data in and writing the sidecar
    orphan_data = snapshot_bytes("orphan")
    orphan_sha = hashlib.sha256(orphan_data).hexdigest()
    (vault.dir / f"{orphan_sha}.db").write_bytes(orphan_data)
    # a sidecar whose data file someone removed: not listed, but left for an operator to see
    lonely = add(vault, "lonely", T0 + 10)
    Path(lonely.path).unlink()
    assert [e.sha256 for e in vault.list()] == [keep.sha256]

    removed = Vault(vault.dir).prepare()
    assert sorted(p.name for p in removed) == sorted([f"{fsutil.TEMP_PREFIX}123-456.partial", f"{orphan_sha}.db"])
    assert sorted(p.name for p in vault.dir.iterdir()) == sorted(
        [f"{keep.sha256}.db", f"{keep.sha256}.json", f"{lonely.sha256}.json"])
    assert [e.sha256 for e in vault.list()] == [keep.sha256]


def test_file_without_sidecar_is_not_listed(vault):
    data = snapshot_bytes("x")
    (vault.dir / f"{hashlib.sha256(data).hexdigest()}.db").write_bytes(data)
    assert vault.list() == []
    assert vault.has(hashlib.sha256(data).hexdigest()) is None


def test_unreadable_or_mismatched_sidecars_are_not_listed(vault):
    a = add(vault, "a")
    b = add(vault, "b", T0 + 1)
    (vault.dir / f"{a.sha256}.json").write_text("{not json")
    meta = json.loads((vault.dir / f"{b.sha256}.json").read_text())
    meta["sha256"] = "0" * 64
    (vault.dir / f"{b.sha256}.json").write_text(json.dumps(meta))
    (vault.dir / "notes.json").write_text("{}")
    assert vault.list() == []


def test_pull_refuses_when_the_disk_is_too_small(vault):
    data = snapshot_bytes("a")
    huge = Incoming(**{**incoming_for(data).__dict__, "size": 1 << 60})
    with pytest.raises(VaultDiskError, match="lower \\[vault\\] keep"):
        vault.pull(huge, writer(data))
    assert list(vault.dir.iterdir()) == []


# -- resolve ----------------------------------------------------------------------


def fake(sha: str, created: float) -> VaultEntry:
    return VaultEntry(sha256=sha, size=1, source_member="m1", original_name="s.db", revision=1, cluster_id="c",
                      member_id="m", etcd_version="3.4.23", created_at="", created_unix=created, pulled_at="",
                      pulled_unix=created)


ENTRIES = [fake("abcd" + "1" * 60, T0), fake("abce" + "2" * 60, T0 + 2), fake("ffff" + "3" * 60, T0 + 1)]


def test_resolve_latest_and_prefixes():
    assert resolve_ref(ENTRIES, "latest").sha256.startswith("abce")
    assert resolve_ref(ENTRIES, "abcd").sha256 == "abcd" + "1" * 60
    assert resolve_ref(ENTRIES, "FFFF3").sha256 == "ffff" + "3" * 60
    assert resolve_ref(ENTRIES, "abce" + "2" * 60).sha256 == "abce" + "2" * 60


@pytest.mark.parametrize(("ref", "message"), [
    ("abc", "at least 4 hex digits"),
    ("xyz1", "is not a snapshot id"),
    ("abcd" + "1" * 61, "is not a snapshot id"),
    ("abcf", "no snapshot 'abcf'"),
    ("abc1", "no snapshot"),
])
def test_resolve_errors_are_usage_errors(ref, message):
    with pytest.raises(UsageError, match=message) as info:
        resolve_ref(ENTRIES, ref)
    assert info.value.exit_code == 2


def test_resolve_ambiguous_prefix_lists_the_candidates():
    with pytest.raises(UsageError) as info:
        resolve_ref(ENTRIES + [fake("abcd" + "9" * 60, T0)], "abcd")
    assert info.value.exit_code == 2
    assert "ambiguous: 2 snapshots" in str(info.value)
    assert "abcd111111111111" in str(info.value) and "abcd999999999999" in str(info.value)


def test_resolve_latest_in_an_empty_vault(vault):
    with pytest.raises(UsageError, match="holds no snapshots yet"):
        vault.resolve("latest")


def test_latest_is_the_newest_scheduled_or_manual_entry_never_a_safety_or_derived_one():
    def of(kind: str, sha: str, revision: int) -> VaultEntry:
        return fake(sha, T0 + revision).with_(revision=revision, kind=kind)

    scheduled, manual = of("scheduled", "aaaa" + "1" * 60, 10), of("manual", "bbbb" + "2" * 60, 20)
    safety, derived = of("pre-restore", "cccc" + "3" * 60, 30), of("point-in-time", "dddd" + "4" * 60, 40)
    assert resolve_ref([scheduled, manual, safety, derived], "latest") == manual
    assert resolve_ref([scheduled, safety], "latest") == scheduled
    assert resolve_ref([scheduled, manual, safety, derived], "cccc") == safety      # by id, as any other
    with pytest.raises(UsageError, match=r"no scheduled or manual snapshot yet.*1 snapshot\(s\) \(pre-restore\) "
                                         r"are chosen by id") as info:
        resolve_ref([safety], "latest")
    assert info.value.exit_code == 2


def test_every_entry_has_a_kind_and_an_old_one_gets_it_from_its_pin(vault):
    manual = vault.add_file(*_file(vault, "manual"), now=T0)[0]
    assert manual.kind == "manual" and vault.list()[0].kind == "manual"
    assert json.loads(vault.meta_path(manual.sha256).read_text())["kind"] == "manual"
    old_safety = add(vault, "old-safety", created=T0 + 5)
    old_plain = add(vault, "old-plain", created=T0 + 6)
    vault.pin(old_safety.sha256, "pre-restore 20261201-abc")
    for e in (old_safety, old_plain):   # sidecars written before kinds were recorded
        meta = json.loads(vault.meta_path(e.sha256).read_text())
        del meta["kind"]
        vault.meta_path(e.sha256).write_text(json.dumps(meta))
    kinds = {e.sha256: e.kind for e in Vault(vault.dir).list()}
    assert kinds == {manual.sha256: "manual", old_safety.sha256: "pre-restore", old_plain.sha256: "scheduled"}
    assert Vault(vault.dir).resolve("latest").sha256 == old_plain.sha256
    bad = json.loads(vault.meta_path(old_plain.sha256).read_text())
    bad["kind"] = "hourly"
    vault.meta_path(old_plain.sha256).write_text(json.dumps(bad))
    assert old_plain.sha256 not in {e.sha256 for e in Vault(vault.dir).list()}   # an unknown kind: not an entry


def _file(vault: Vault, kind: str) -> tuple[Path, Incoming]:
    data = snapshot_bytes(kind)
    path = vault.dir.parent / f"{kind}.db"
    path.write_bytes(data)
    return path, Incoming(**{**incoming_for(data).__dict__, "kind": kind})

def test_resolve_against_the_directory(vault):
    a = add(vault, "a", T0)
    b = add(vault, "b", T0 + 1)
    assert vault.resolve("latest") == b
    assert vault.resolve(a.sha256[:8]) == a


# -- retention ----------------------------------------------------------------------


def test_retention_keeps_the_newest_n(vault):
    entries = [add(vault, f"s{i}", T0 + i) for i in range(5)]
    verdicts = vault.apply_retention(keep=2)
    assert [v.keep for v in verdicts] == [True, True, False, False, False]
    kept = [e.sha256 for e in vault.list()]
    assert kept == [entries[4].sha256, entries[3].sha256]
    for gone in entries[:3]:
        assert not Path(gone.path).exists()
        assert not (vault.dir / f"{gone.sha256}.json").exists()


def test_retention_never_deletes_the_newest(vault):
    only = add(vault, "only")
    assert vault.apply_retention(keep=1)[0].keep
    assert vault.list() == [only]


# -- what the daemon pulls ------------------------------------------------------------


def view(name, leader=False, healthy=True, reachable=True, snaps=(), busy=None, cluster="c1", leader_id="a1"):
    if not reachable:
        return MemberView(name, f"tcp://127.0.0.1:{7000 + int(name[-1])}", False, error="timed out")
    member_id = f"a{name[-1]}"
    report = {
        "agent": {"version": "0.1.0", "busy": busy},
        "member": {"name": name, "data_dir": f"/var/lib/etcd-{name}"},
        "etcd": {"healthy": healthy, "is_leader": leader, "cluster_id": cluster, "revision": 10,
                 "member_id": member_id, "leader": member_id if leader else leader_id},
        "snapshots": [{"name": f"{name}-{i}.db", "sha256": f"{name}{i}".ljust(64, "0"),
                       "created_unix": t, "created_at": "-", "size": 10, "revision": 5, "cluster_id": cluster}
                      for i, t in enumerate(snaps)],
    }
    return MemberView(name, f"tcp://127.0.0.1:{7000 + int(name[-1])}", True, report=AgentReport.from_json(report))


def nothing_in_vault(sha: str) -> bool:
    return False


def test_pull_prefers_a_follower_as_fresh_as_the_leader():
    views = [view("m1", leader=True, snaps=[T0 + 60]), view("m2", snaps=[T0]), view("m3", snaps=[T0 + 30])]
    choice = choose_pull(views, nothing_in_vault, None, interval=3600)
    assert choice.member == "m3"
    assert choice.snapshot is not None and choice.snapshot.name == "m3-0.db"
    assert choice.sentence.startswith("pulling m3-0.db of follower m3")


def test_pull_takes_the_leader_when_followers_are_stale():
    views = [view("m1", leader=True, snaps=[T0 + 7200]), view("m2", snaps=[T0]), view("m3")]
    choice = choose_pull(views, nothing_in_vault, None, interval=3600)
    assert choice.member == "m1"
    assert "of leader m1" in choice.sentence


def test_pull_ignores_unhealthy_and_unreachable_members():
    views = [view("m1", leader=True, snaps=[T0]), view("m2", healthy=False, snaps=[T0 + 60]),
             view("m3", reachable=False)]
    assert choose_pull(views, nothing_in_vault, None, 3600).member == "m1"


def test_pull_skips_what_the_vault_has_or_what_is_older():
    views = [view("m1", leader=True), view("m2", snaps=[T0])]
    has = choose_pull(views, lambda sha: sha.startswith("m20"), None, 3600)
    assert has.member is None and has.failure is None
    assert has.sentence.startswith("the vault already has the newest snapshot")
    older = choose_pull(views, nothing_in_vault, {"c1": 5}, 3600)   # the vault holds revision 5 already
    assert older.member is None and older.failure is None
    assert "not newer than the vault's (revision 5 of cluster c1)" in older.sentence
    assert choose_pull(views, nothing_in_vault, {"c1": 4}, 3600).member == "m2"
    assert choose_pull(views, nothing_in_vault, {"other": 9}, 3600).member == "m2"   # a new cluster


@pytest.mark.parametrize(("views", "failure", "words"), [
    ([view("m1", reachable=False), view("m2", reachable=False)], "unreachable", "no agent answered"),
    ([view("m1", healthy=False, snaps=[T0])], "unreachable", "no member reports a healthy etcd"),
    ([view("m1", leader=True), view("m2")], "no_snapshot", "no healthy member has a snapshot"),
])
def test_pull_reports_why_nothing_can_be_pulled(views, failure, words):
    choice = choose_pull(views, nothing_in_vault, None, 3600)
    assert (choice.member, choice.failure) == (None, failure)
    assert words in choice.sentence


def test_backup_member_defaults_to_an_idle_healthy_follower():
    views = [view("m1", leader=True), view("m2", busy="snapshot.take"), view("m3")]
    chosen, why = choose_backup_member(views, None)
    assert chosen.name == "m3"
    assert why == "follower m3 (sparing the leader)"
    only_leader = [view("m1", leader=True), view("m2", healthy=False), view("m3", reachable=False)]
    assert choose_backup_member(only_leader, None)[0].name == "m1"


def test_backup_member_refusals():
    views = [view("m1", leader=True), view("m2", healthy=False), view("m3", reachable=False)]
    assert choose_backup_member(views, "m1")[0].name == "m1"
    with pytest.raises(UnsafeRefusal, match=r"agent of member m3 .* is unreachable") as info:
        choose_backup_member(views, "m3")
    assert info.value.exit_code == 3
    with pytest.raises(UnsafeRefusal, match="etcd on member m2 is not healthy"):
        choose_backup_member(views, "m2")
    with pytest.raises(UsageError, match="no member named 'm9'"):
        choose_backup_member(views, "m9")
    with pytest.raises(EtcdUnavailable, match="no member has a healthy etcd"):
        choose_backup_member([view("m2", healthy=False), view("m3", reachable=False)], None)


def test_cluster_summary_names_the_leader_and_flags_disagreement():
    ok = cluster_summary([view("m1", leader=True), view("m2"), view("m3", reachable=False)])
    assert (ok["leader"], ok["leader_id"], ok["cluster_id"], ok["consistent"]) == ("m1", "a1", "c1", True)
    assert (ok["reachable"], ok["healthy"]) == (2, 2)
    # the leader's own agent is down: the followers still say who leads
    unseen = cluster_summary([view("m1", reachable=False), view("m2"), view("m3")])
    assert (unseen["leader"], unseen["leader_id"], unseen["consistent"]) == (None, "a1", True)
    split = cluster_summary([view("m1", leader=True), view("m2", leader=True, cluster="c2")])
    assert split["leader"] is None and split["cluster_id"] is None and not split["consistent"]
    assert split["cluster_ids"] == ["c1", "c2"] and split["leaders"] == ["m1", "m2"]
    none = cluster_summary([view("m1", leader_id=None), view("m2", leader_id=None)])
    assert none["leader"] is None and none["leader_id"] is None


# -- pins, bundles and reading back (directory backend) ------------------------------------------------


def test_pinned_entries_survive_retention_and_show_in_listings(vault):
    entries = [add(vault, f"p{i}", T0 + i) for i in range(4)]
    pinned = vault.pin(entries[0].sha256, "pre-restore")
    assert pinned.pinned == "pre-restore"
    assert (vault.dir / f"{entries[0].sha256}.pin").read_text() == "pre-restore\n"
    verdicts = {v.name: v.reason for v in vault.apply_retention(keep=1)}
    assert verdicts[entries[0].sha256] == "keep: pinned (pre-restore)"
    assert [e.sha256 for e in vault.list()] == [entries[3].sha256, entries[0].sha256]
    assert Vault(vault.dir).list()[1].pinned == "pre-restore"
    assert vault.unpin(entries[0].sha256).pinned is None
    vault.apply_retention(keep=1)
    assert [e.sha256 for e in vault.list()] == [entries[3].sha256]
    with pytest.raises(UsageError, match="pin reason"):
        vault.pin(entries[3].sha256, "x" * 65)
    with pytest.raises(UsageError, match="no snapshot"):
        vault.pin("0" * 64, "why")


def test_add_file_pins_a_safety_snapshot_also_when_the_vault_had_it(vault, tmp_path):
    data = snapshot_bytes("safety")
    path = tmp_path / "safety.db"
    path.write_bytes(data)
    entry, pulled = vault.add_file(path, incoming_for(data), pin="pre-restore")
    assert pulled and entry.pinned == "pre-restore"
    again, pulled = vault.add_file(path, incoming_for(data), pin="pre-restore 2")
    assert not pulled and again.pinned == "pre-restore 2" and vault.has(entry.sha256).pinned == "pre-restore 2"


def test_materialize_of_a_plain_directory_vault_yields_its_file_checked(vault):
    entry = add(vault, "m")
    with vault.materialize(entry) as path:
        assert path == vault.data_path(entry.sha256)
    Path(entry.path).write_bytes(snapshot_bytes("other"))
    with pytest.raises(SnapshotCorrupt), vault.materialize(entry):
        pass


def test_a_bundle_is_stored_only_encrypted_and_goes_with_its_snapshot(vault, tmp_path):
    entry = add(vault, "b")
    plain = tmp_path / "plain.tar"
    plain.write_bytes(b"not encrypted")
    with pytest.raises(UsageError, match="not age-encrypted"):
        vault.add_bundle(entry, plain)
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(b"age-encryption.org/v1\n-> X25519 abc\n" + b"\x00" * 64)
    assert vault.add_bundle(entry, sealed).bundle is True
    assert vault.has(entry.sha256).bundle is True
    out = tmp_path / "raw.age"
    vault.export(vault.has(entry.sha256), out, bundle=True, raw=True)
    assert out.read_bytes() == sealed.read_bytes()
    vault.delete(vault.has(entry.sha256))
    assert list(vault.dir.iterdir()) == []


def test_a_sidecar_of_an_older_version_still_reads(vault):
    entry = add(vault, "old")
    meta = json.loads((vault.dir / f"{entry.sha256}.json").read_text())
    meta.pop("revision_exact")
    (vault.dir / f"{entry.sha256}.json").write_text(json.dumps(meta))
    assert vault.list()[0].revision_exact is True and vault.list()[0].sha256 == entry.sha256
