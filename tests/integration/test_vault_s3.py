"""The vault on a real S3 API server (moto_server, a separate process on loopback, spoken to by the real
boto3 over HTTP) and age encryption at rest, on both backends. Production targets are AWS S3, MinIO or
Ceph RGW; what these tests rely on is the S3 API itself."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from etcdguard.common.base.agekeys import AgeError, is_age_file
from etcdguard.common.base.errors import ConfigError, SnapshotCorrupt
from etcdguard.common.snapshot.integrity import digest_file
from etcdguard.coordinator.config import load_coordinator_config, parse_coordinator_config
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.vault import names
from etcdguard.coordinator.vault.factory import open_vault
from etcdguard.coordinator.vault.store import Incoming, Vault, VaultBackendError

from tests.helpers.agentconf import render_toml
from tests.helpers.coordinator import Coordinator
from tests.helpers.etcd import snapshot_status, snapshot_status_json
from tests.helpers.net import wait_until
from tests.helpers.proxy import CuttingProxy, SwitchProxy
from tests.helpers.s3 import MotoServer, age_keypair, quiet_env, random_snapshot, synthetic_snapshot

T0 = 1_790_000_000.0
PART = 5 << 20
# a command that must not wait for a hanging S3 answers within this (it used to take minutes)
STATUS_AT_ONCE = 4.5


def need_age() -> None:
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the age tool is not installed (make test installs it: apt install age)", pytrace=False)
        pytest.skip("the age tool is not installed (apt install age)")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory):
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: MotoServer, request: pytest.FixtureRequest) -> str:
    name = "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    moto.create_bucket(name)
    return name


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in quiet_env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    for key in list(os.environ):
        if key.startswith("AWS_") and key not in quiet_env():
            monkeypatch.delenv(key)


def config_for(tmp_path: Path, moto: MotoServer, bucket: str, *, creds: Any = None, recipients=(), identity=None,
               backend: str = "s3", prefix: str = "prod/", endpoint: str = "", extra: Any = None,
               compression: str = "none") -> Any:
    """The vault's config; uncompressed unless asked, so the object-storage mechanics (parts, ETags, sizes)
    are tested on objects of a known size (the compressed vault: the tests at the end)."""
    creds_file = creds if creds is not None else moto.credentials_file(tmp_path / "s3.credentials")
    vault: dict[str, Any] = {"backend": backend, "dir": str(tmp_path / "vault"), "keep": 3,
                             "compression": compression}
    if recipients:
        vault["encrypt_to"] = list(recipients)
    if identity is not None:
        vault["age_identity"] = str(identity)
    vault["s3"] = {"bucket": bucket, "endpoint": endpoint or moto.endpoint, "region": "us-east-1", "prefix": prefix,
                   "path_style": True, "credentials_file": str(creds_file), "part_size": PART, **(extra or {})}
    return parse_coordinator_config({"coordinator": {"state_dir": str(tmp_path / "state")}, "vault": vault},
                                    str(tmp_path / "coordinator.toml"))


def incoming(path: Path, created: float = T0, revision: int = 7, member: str = "cp2") -> Incoming:
    d = digest_file(path)
    return Incoming(sha256=d.sha256, size=d.size, source_member=member, original_name=f"snap-r{revision}.db",
                    revision=revision, cluster_id="7e3a1c0f", member_id="8e9e05c5", etcd_version="3.5.16",
                    created_at="2026-09-21T10:13:20Z", created_unix=created)


def snapshot_keys(moto: MotoServer, bucket: str) -> list[str]:
    return [k for k in moto.keys_in_bucket(bucket) if "/snapshots/" in k]


# -- S3: storing, listing, reading back ---------------------------------------------------------


def test_multipart_upload_listing_across_restarts_and_read_back(tmp_path, moto, bucket):
    snap = tmp_path / "snap.db"
    sha = synthetic_snapshot(snap, 3 * PART + 12345)
    vault = open_vault(config_for(tmp_path, moto, bucket))
    vault.prepare()
    entry, pulled = vault.add_file(snap, incoming(snap))
    assert pulled and entry.sha256 == sha and not entry.encrypted
    keys = snapshot_keys(moto, bucket)
    assert len(keys) == 1 and keys[0].startswith(f"prod/snapshots/{sha}~t1790000000000~r7~s{entry.size}~")
    head = moto.client().head_object(Bucket=bucket, Key=keys[0])
    assert head["ETag"].strip('"').endswith("-4")        # four parts: a multipart upload
    assert head["Metadata"]["snapshot-sha256"] == sha == head["Metadata"]["content-sha256"]
    assert head["ContentLength"] == snap.stat().st_size
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []   # no plaintext left on the way

    again = open_vault(config_for(tmp_path, moto, bucket))       # a restarted coordinator: a listing
    assert again.list() == [entry]
    assert again.resolve("latest") == entry and again.has(sha) == entry
    assert again.add_file(snap, incoming(snap, member="cp3"))[1] is False   # stored once
    with again.materialize(entry) as path:
        assert path.parent == tmp_path / "state" / "vault-work"
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert digest_file(path).sha256 == sha
    assert not path.exists()
    out = tmp_path / "export.db"
    assert again.export(entry, out) == snap.stat().st_size
    assert out.read_bytes() == snap.read_bytes()


def test_retention_and_pins_on_the_bucket(tmp_path, moto, bucket):
    vault = open_vault(config_for(tmp_path, moto, bucket))
    vault.prepare()
    entries = []
    for i in range(5):
        snap = tmp_path / f"s{i}.db"
        synthetic_snapshot(snap, 4096 + i, seed=i)
        entries.append(vault.add_file(snap, incoming(snap, created=T0 + i, revision=10 + i))[0])
    pinned = vault.pin(entries[0].sha256, "pre-restore")
    assert pinned.pinned == "pre-restore"
    verdicts = {v.name: (v.keep, v.reason) for v in vault.apply_retention(keep=2)}
    assert verdicts[entries[0].sha256] == (True, "keep: pinned (pre-restore)")
    assert [v for k, v in verdicts.items() if not v[0]] == [(False, "beyond keep=2")] * 2
    listed = open_vault(config_for(tmp_path, moto, bucket)).list()
    assert [e.sha256 for e in listed] == [entries[4].sha256, entries[3].sha256, entries[0].sha256]
    assert listed[-1].pinned == "pre-restore"
    assert len(snapshot_keys(moto, bucket)) == 3
    assert [k for k in moto.keys_in_bucket(bucket) if "/pins/" in k] == [
        f"prod/pins/{entries[0].sha256}~pre-restore"]
    vault.unpin(entries[0].sha256)
    vault.apply_retention(keep=2)
    assert [e.sha256 for e in vault.list()] == [entries[4].sha256, entries[3].sha256]
    assert [k for k in moto.keys_in_bucket(bucket) if "/pins/" in k] == []


def test_each_object_records_its_kind_and_latest_skips_safety_snapshots(tmp_path, moto, bucket):
    vault = open_vault(config_for(tmp_path, moto, bucket))
    stored = {}
    for i, kind in enumerate(("scheduled", "manual", "pre-restore")):
        snap = tmp_path / f"{kind}.db"
        synthetic_snapshot(snap, 6000 + i, seed=i)
        inc = dataclasses.replace(incoming(snap, created=T0 + i, revision=10 + i), kind=kind)
        stored[kind] = vault.add_file(snap, inc, pin="pre-restore op1" if kind == "pre-restore" else None)[0]
    for kind, e in stored.items():
        (key,) = [k for k in snapshot_keys(moto, bucket) if e.sha256 in k]
        assert key.endswith(f"~k{kind}.db")
        assert moto.client().head_object(Bucket=bucket, Key=key)["Metadata"]["snapshot-kind"] == kind
    again = open_vault(config_for(tmp_path, moto, bucket))
    assert {e.sha256: e.kind for e in again.list()} == {e.sha256: k for k, e in stored.items()}
    assert again.resolve("latest").sha256 == stored["manual"].sha256     # not the newer pre-restore one
    assert again.resolve(stored["pre-restore"].sha256[:8]).kind == "pre-restore"

    # objects stored before kinds were recorded: the kind comes from the pin (a restore's), else scheduled
    for kind in ("manual", "pre-restore"):
        (key,) = [k for k in snapshot_keys(moto, bucket) if stored[kind].sha256 in k]
        moto.client().copy_object(Bucket=bucket, Key=key.replace(f"~k{kind}", ""),
                                  CopySource={"Bucket": bucket, "Key": key})
        moto.client().delete_object(Bucket=bucket, Key=key)
    legacy = open_vault(config_for(tmp_path, moto, bucket))
    derived = {e.sha256: e.kind for e in legacy.list()}
    assert derived[stored["pre-restore"].sha256] == "pre-restore"
    assert derived[stored["manual"].sha256] == "scheduled"
    old = legacy.resolve(stored["manual"].sha256[:8])        # read, checked and deleted under its old key
    with legacy.materialize(old) as path:
        assert digest_file(path).sha256 == old.sha256
    legacy.delete(old)
    assert not [k for k in snapshot_keys(moto, bucket) if old.sha256 in k]

def test_a_tampered_object_is_refused(tmp_path, moto, bucket):
    metrics = CoordinatorMetrics(backend="s3")
    vault = open_vault(config_for(tmp_path, moto, bucket), metrics.record_backend_failure)
    snap = tmp_path / "snap.db"
    synthetic_snapshot(snap, 2 * PART)
    entry, _ = vault.add_file(snap, incoming(snap))
    key = snapshot_keys(moto, bucket)[0]
    data = bytearray(snap.read_bytes())
    data[1000] ^= 0xFF
    head = moto.client().head_object(Bucket=bucket, Key=key)
    moto.client().put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=head["Metadata"])
    with pytest.raises(SnapshotCorrupt, match="altered or damaged; refused"), vault.materialize(entry):
        pass
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []
    out = tmp_path / "out.db"
    with pytest.raises(SnapshotCorrupt):
        vault.export(entry, out)
    assert not out.exists()
    # an object swapped for another snapshot's is refused by the sha256 its metadata records
    moto.client().put_object(Bucket=bucket, Key=key, Body=snap.read_bytes(), Metadata={"snapshot-sha256": "0" * 64})
    with pytest.raises(VaultBackendError, match="records snapshot sha256") as info, vault.materialize(entry):
        pass
    assert info.value.reason == "checksum"
    text = metrics.render().decode()
    assert 'etcdguard_vault_backend_failures_total{backend="s3",op="download",reason="checksum"} 3.0' in text


def test_bucket_unreachable_mid_upload_leaves_no_snapshot(tmp_path, moto, bucket):
    snap = tmp_path / "snap.db"
    sha = synthetic_snapshot(snap, 4 * PART)
    proxy = CuttingProxy(moto.port, limit=PART + PART // 2)   # inside the second part
    metrics = CoordinatorMetrics(backend="s3")
    vault = open_vault(config_for(tmp_path, moto, bucket, endpoint=f"http://127.0.0.1:{proxy.port}"),
                       metrics.record_backend_failure)
    try:
        with pytest.raises(VaultBackendError) as info:
            vault.add_file(snap, incoming(snap))
    finally:
        proxy.close()
    assert proxy.cut.is_set() and info.value.reason == "unreachable"
    assert "did not answer" in str(info.value) or "unreachable" in str(info.value) or "endpoint" in str(info.value)
    # the long key is named once (botocore's URL would repeat it), the endpoint still shows
    assert str(info.value).count(sha) == 1, str(info.value)
    assert f"uploading prod/snapshots/{sha}~" in str(info.value)
    assert f'"http://127.0.0.1:{proxy.port}"' in str(info.value) or "127.0.0.1" in str(info.value)
    assert snapshot_keys(moto, bucket) == []
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []
    assert 'op="upload",reason="unreachable"} 1.0' in metrics.render().decode()
    # the next start aborts what the cut left incomplete; the vault is empty and usable
    direct = open_vault(config_for(tmp_path, moto, bucket))
    aborted = direct.prepare()
    uploads = moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == [] and all("/snapshots/" in str(p) for p in aborted)
    assert direct.list() == []
    assert direct.add_file(snap, incoming(snap))[1] is True


def incomplete_uploads(moto: MotoServer, bucket: str, prefix: str = "prod/") -> list[str]:
    return [u["Key"] for u in moto.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])]


def test_an_upload_cut_by_an_outage_is_aborted_once_s3_answers_again(tmp_path, moto, bucket):
    """boto3 aborts a failed multipart upload itself, unless the outage is what failed it: then the
    coordinator aborts it when the endpoint answers again, at its next listing or push, not only at the
    next start. Stale uploads of others under the prefix go after abort_incomplete_after."""
    snap, second = tmp_path / "snap.db", tmp_path / "second.db"
    synthetic_snapshot(snap, 4 * PART)
    synthetic_snapshot(second, 2 * PART, seed=2)
    proxy = SwitchProxy(moto.port)
    try:
        vault = open_vault(config_for(tmp_path, moto, bucket, endpoint=f"http://127.0.0.1:{proxy.port}",
                                      extra={"connect_timeout": "2s", "read_timeout": "5s", "max_attempts": 1}))
        vault.prepare()
        proxy.cut_after(PART + PART // 2)                  # inside the second part; then the endpoint is down
        with pytest.raises(VaultBackendError) as info:
            vault.add_file(snap, incoming(snap))
        assert proxy.cut.is_set() and info.value.reason == "unreachable"
        left = incomplete_uploads(moto, bucket)
        assert len(left) == 1 and "/snapshots/" in left[0]   # boto3's own abort could not reach it
        vault.refresh()                                      # still down: nothing to do, nothing raised
        assert vault.catalog.view().state == "failed" and incomplete_uploads(moto, bucket) == left

        proxy.forward()                                      # S3 answers again; the next push
        entry, pulled = vault.add_file(second, incoming(second, revision=8))
        assert pulled and incomplete_uploads(moto, bucket) == []
        assert [e.sha256 for e in vault.list()] == [entry.sha256]

        # the same outage again, this time found by the background listing before any push
        proxy.cut_after(PART // 2)
        with pytest.raises(VaultBackendError):
            vault.add_file(snap, incoming(snap))
        assert len(incomplete_uploads(moto, bucket)) == 1
        proxy.forward()
        assert vault.refresh().state == "ok" and incomplete_uploads(moto, bucket) == []

        # another writer's incomplete upload: left alone until it is older than abort_incomplete_after
        # (moto stamps every upload 2010-11-10, so "now" is set just after that, then an hour later)
        foreign = moto.client().create_multipart_upload(Bucket=bucket, Key="prod/snapshots/other-writer.db")
        initiated = moto.client().list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"].timestamp()
        assert vault.sweep(now=initiated + 60) == [] and incomplete_uploads(moto, bucket) == [
            "prod/snapshots/other-writer.db"]
        assert [str(k) for k in vault.sweep(now=initiated + 3600)] == ["prod/snapshots/other-writer.db"]
        assert incomplete_uploads(moto, bucket) == [] and foreign["UploadId"]
    finally:
        proxy.close()


# -- credentials -----------------------------------------------------------------------------------


def test_credentials_problems_at_config_are_config_errors(tmp_path, moto, bucket):
    with pytest.raises(ConfigError, match=r"vault\.s3\.credentials_file .*: no such file") as info:
        open_vault(config_for(tmp_path, moto, bucket, creds=tmp_path / "missing"))
    assert info.value.exit_code == 2
    loose = moto.credentials_file(tmp_path / "loose")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        open_vault(config_for(tmp_path, moto, bucket, creds=loose))
    junk = tmp_path / "junk"
    junk.write_text("[default]\nregion = x\n")
    os.chmod(junk, 0o600)
    with pytest.raises(ConfigError, match="no section with aws_access_key_id"):
        open_vault(config_for(tmp_path, moto, bucket, creds=junk))
    nothing = config_for(tmp_path, moto, bucket)
    nothing = parse_coordinator_config({"coordinator": {"state_dir": str(tmp_path / "state")}, "vault": {
        "backend": "s3", "s3": {"bucket": bucket, "endpoint": moto.endpoint, "path_style": True}}}, "c.toml")
    with pytest.raises(ConfigError, match="no S3 credentials found"):
        open_vault(nothing)


def test_daemon_exits_2_without_credentials(tmp_path, moto, bucket):
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(
        f'[coordinator]\nstate_dir = "{tmp_path / "state"}"\ncontrol_socket = "{tmp_path / "run" / "c.sock"}"\n'
        f'insecure = true\n[vault]\nbackend = "s3"\n[vault.s3]\nbucket = "{bucket}"\nendpoint = "{moto.endpoint}"\n'
        f'path_style = true\n[metrics]\nenabled = false\n[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\n')
    r = subprocess.run([sys.executable, "-m", "etcdguard.coordinator.daemon_cli", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, env=quiet_env(), check=False)
    assert r.returncode == 2, r.stderr
    assert "vault.s3: no S3 credentials found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "etcdguard.coordinator.ctl", "export", "latest", "--output",
                        str(tmp_path / "x.db"), "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                       env=quiet_env(), check=False)
    assert r.returncode == 2 and "no S3 credentials found" in r.stderr


def test_refused_credentials_at_run_time_count_a_failure(tmp_path):
    server = MotoServer(tmp_path / "moto-auth", auth=True).start()
    try:
        server.create_bucket("vault-auth")
        good = config_for(tmp_path, server, "vault-auth")
        snap = tmp_path / "snap.db"
        synthetic_snapshot(snap, 4096)
        assert open_vault(good).add_file(snap, incoming(snap))[1]
        wrong = server.credentials_file(tmp_path / "wrong", {**server.access_key, "aws_secret_access_key": "nope"})
        metrics = CoordinatorMetrics(backend="s3")
        vault = open_vault(config_for(tmp_path, server, "vault-auth", creds=wrong), metrics.record_backend_failure)
        with pytest.raises(VaultBackendError, match="credentials were refused") as info:
            vault.list()
        assert info.value.reason == "credentials" and "nope" not in str(info.value)
        assert 'etcdguard_vault_backend_failures_total{backend="s3",op="list",reason="credentials"} 1.0' in (
            metrics.render().decode())
        assert len(open_vault(good).list()) == 1
    finally:
        server.stop()


# -- encryption -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3", "dir"])
def test_encrypted_round_trip_and_nothing_plain_at_rest(tmp_path, moto, bucket, backend):
    need_age()
    identity, recipient = age_keypair(tmp_path / "keys")
    snap = tmp_path / "snap.db"
    sha = synthetic_snapshot(snap, PART + 777)
    vault = open_vault(config_for(tmp_path, moto, bucket, backend=backend, recipients=[recipient],
                                  identity=identity))
    vault.prepare()
    entry, _ = vault.add_file(snap, incoming(snap), pin="pre-restore")
    assert entry.encrypted and entry.pinned == "pre-restore"
    if backend == "s3":
        key = snapshot_keys(moto, bucket)[0]
        assert key.endswith(".db.age")
        stored = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    else:
        files = sorted(p.name for p in (tmp_path / "vault").iterdir())
        assert files == [f"{sha}.db.age", f"{sha}.json", f"{sha}.pin"]
        stored = (tmp_path / "vault" / f"{sha}.db.age").read_bytes()
        assert json.loads((tmp_path / "vault" / f"{sha}.json").read_text())["sha256"] == sha
    assert is_age_file(stored)
    assert hashlib.sha256(stored[:-32]).digest() != stored[-32:]          # not an etcd snapshot
    assert snap.read_bytes()[4096:8192] not in stored
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []
    with vault.materialize(entry) as path:
        assert path.read_bytes() == snap.read_bytes()
    plain = subprocess.run(["age", "-d", "-i", str(identity)], input=stored, capture_output=True, check=True).stdout
    assert plain == snap.read_bytes()


def test_a_wrong_identity_is_a_clear_error(tmp_path, moto, bucket):
    need_age()
    identity, recipient = age_keypair(tmp_path / "keys")
    other, _ = age_keypair(tmp_path / "keys", "other")
    snap = tmp_path / "snap.db"
    synthetic_snapshot(snap, 9000)
    entry, _ = open_vault(config_for(tmp_path, moto, bucket, recipients=[recipient], identity=identity)).add_file(
        snap, incoming(snap))
    with pytest.raises(ConfigError, match=r"is not in vault\.encrypt_to"):
        open_vault(config_for(tmp_path, moto, bucket, recipients=[recipient], identity=other))
    reader = open_vault(config_for(tmp_path, moto, bucket, identity=other))   # a reader with the wrong key
    with pytest.raises(AgeError, match="no identity matched") as info, reader.materialize(entry):
        pass
    assert "wrong age_identity?" in str(info.value) and "AGE-SECRET-KEY" not in str(info.value)
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []
    os.chmod(identity, 0o644)
    with pytest.raises(ConfigError, match=r"age_identity .*: readable by other users"):
        open_vault(config_for(tmp_path, moto, bucket, recipients=[recipient], identity=identity))


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_age_decrypts_a_vault_object_to_a_snapshot_etcdctl_reads(tmp_path, moto, bucket, etcd_member):
    need_age()
    from etcdguard.agent.discovery.member import ClientTLS
    from etcdguard.agent.snapshots.take import Source, save_to_file

    for i in range(20):
        etcd_member.put(f"/registry/k{i}", "v" * 100)
    snap = tmp_path / "real.db"
    meta = save_to_file(Source(etcd_member.client_url, ClientTLS(None, None, None)), snap, tool=None)
    identity, recipient = age_keypair(tmp_path / "keys")
    vault = open_vault(config_for(tmp_path, moto, bucket, recipients=[recipient], identity=identity))
    vault.add_file(snap, incoming(snap, revision=meta.revision))
    stored = tmp_path / "object.age"
    stored.write_bytes(moto.client().get_object(Bucket=bucket, Key=snapshot_keys(moto, bucket)[0])["Body"].read())
    assert snapshot_status(etcd_member.build, stored, check=False).returncode != 0   # ciphertext: not a snapshot
    decrypted = tmp_path / "by-hand.db"
    subprocess.run(["age", "-d", "-i", str(identity), "-o", str(decrypted), str(stored)], check=True, timeout=60)
    info = snapshot_status_json(etcd_member.build, decrypted)
    assert info["revision"] == meta.revision and info["totalKey"] >= 20


# -- compression ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_compressed_and_encrypted_objects_read_back_as_the_snapshot_and_by_hand(tmp_path, moto, bucket,
                                                                                etcd_member):
    """S3 + age + zstd: the object is the snapshot compressed, then encrypted; the listing shows both sizes;
    a restore's check, an export and `age -d | zstd -d` all give back the snapshot etcd reads."""
    need_age()
    if shutil.which("zstd") is None:
        pytest.skip("the zstd tool is not installed (apt install zstd)")
    from etcdguard.agent.discovery.member import ClientTLS
    from etcdguard.agent.snapshots.take import Source, save_to_file

    for i in range(300):
        etcd_member.put(f"/registry/configmaps/ns-{i % 7}/cm-{i}", json.dumps({"data": {"k": "v" * 200, "i": i}}))
    snap = tmp_path / "real.db"
    meta = save_to_file(Source(etcd_member.client_url, ClientTLS(None, None, None)), snap, tool=None)
    identity, recipient = age_keypair(tmp_path / "keys")
    vault = open_vault(config_for(tmp_path, moto, bucket, recipients=[recipient], identity=identity,
                                  compression="zstd"))
    vault.prepare()
    entry, _ = vault.add_file(snap, incoming(snap, revision=meta.revision))
    (key,) = snapshot_keys(moto, bucket)
    assert key.endswith(".db.zst.age") and entry.compression == "zstd" and entry.encrypted
    head = moto.client().head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["snapshot-sha256"] == entry.sha256 and head["Metadata"]["snapshot-compression"] == "zstd"
    listed = vault.list()[0]
    assert listed.stored_size == head["ContentLength"] < entry.size // 2 and listed.size == snap.stat().st_size
    assert vault.verify_copy(listed) is None                       # downloaded, decrypted, decompressed, checked
    out = tmp_path / "export.db"
    vault.export(listed, out)
    assert out.read_bytes() == snap.read_bytes()
    stored = tmp_path / "object.zst.age"
    stored.write_bytes(moto.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    by_hand = tmp_path / "by-hand.db"
    age = subprocess.run(["age", "-d", "-i", str(identity), str(stored)], capture_output=True, check=True, timeout=60)
    subprocess.run(["zstd", "-d", "-q", "-o", str(by_hand)], input=age.stdout, check=True, timeout=60)
    assert snapshot_status_json(etcd_member.build, by_hand)["revision"] == meta.revision


def test_a_compressed_plain_object_records_its_own_sha256_and_old_objects_stay_readable(tmp_path, moto, bucket):
    """Without age, the object's metadata records the sha256 of its compressed bytes (checked as it is read);
    objects stored before compression was switched on are listed and read back beside the new ones."""
    old_snap, new_snap = tmp_path / "old.db", tmp_path / "new.db"
    synthetic_snapshot(old_snap, PART + 99, seed=1)
    synthetic_snapshot(new_snap, PART + 99, seed=2)
    old, _ = open_vault(config_for(tmp_path, moto, bucket)).add_file(old_snap, incoming(old_snap, revision=5))
    vault = open_vault(config_for(tmp_path, moto, bucket, compression="zstd"))
    new, _ = vault.add_file(new_snap, incoming(new_snap, created=T0 + 60, revision=6))
    keys = {k.split("/")[-1].split("~")[0]: k for k in snapshot_keys(moto, bucket)}
    assert keys[old.sha256].endswith("~kscheduled.db") and keys[new.sha256].endswith("~kscheduled.db.zst")
    body = moto.client().get_object(Bucket=bucket, Key=keys[new.sha256])
    compressed = body["Body"].read()
    assert body["Metadata"]["content-sha256"] == hashlib.sha256(compressed).hexdigest() != new.sha256
    listed = {e.sha256: e for e in vault.list()}
    assert (listed[old.sha256].compression, listed[old.sha256].stored_size) == ("", old.size)
    assert listed[new.sha256].stored_size == len(compressed) < new.size // 10
    for entry, snap in ((listed[old.sha256], old_snap), (listed[new.sha256], new_snap)):
        with vault.materialize(entry) as path:
            assert path.read_bytes() == snap.read_bytes()
    # the compressed bytes replaced by others (metadata kept): refused as they are read
    damaged = bytearray(compressed)
    damaged[100] ^= 1
    moto.client().put_object(Bucket=bucket, Key=keys[new.sha256], Body=bytes(damaged),
                             Metadata=body["Metadata"])
    with pytest.raises(SnapshotCorrupt), vault.materialize(listed[new.sha256]):
        pass
    assert list((tmp_path / "state" / "vault-work").iterdir()) == []


def test_names_module_keys_match_what_the_backend_writes(tmp_path, moto, bucket):
    vault = open_vault(config_for(tmp_path, moto, bucket, prefix=""))
    snap = tmp_path / "s.db"
    synthetic_snapshot(snap, 5000)
    entry, _ = vault.add_file(snap, incoming(snap))
    (key,) = moto.keys_in_bucket(bucket)
    assert key.startswith("snapshots/")
    parsed = names.parse_key("", key)
    assert parsed is not None and parsed.snapshot is not None
    assert (parsed.snapshot.sha256, parsed.snapshot.size, parsed.snapshot.source_member) == (
        entry.sha256, entry.size, "cp2")
    assert isinstance(vault, Vault)


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_rss_stays_flat_through_encrypt_and_upload_of_a_300_mb_snapshot(tmp_path, moto, compression):
    """Peak RSS of a fresh process that (compresses,) encrypts and uploads, at 100 MB and 300 MB: bounded,
    and the same. The snapshots are random bytes, so the compressed objects are as large as the snapshots."""
    need_age()
    from tests.bench.bench_vault import measure, vault_config

    identity, recipient = age_keypair(tmp_path / "keys")
    creds = moto.credentials_file(tmp_path / "s3.credentials")
    peaks = {}
    suffix = ".db.zst.age" if compression == "zstd" else ".db.age"
    for mb in (100, 300):
        snap = tmp_path / f"snap-{mb}.db"
        random_snapshot(snap, mb << 20)
        bucket = f"rss-{compression}-{mb}"
        moto.create_bucket(bucket)
        config = vault_config(tmp_path, "s3", moto.endpoint, bucket, creds, recipient, identity, compression)
        run = measure({"op": "push", "config": config, "snapshot": str(snap)}, quiet_env())
        peaks[mb] = run["peak_rss_kib"] / 1024
        (key,) = moto.keys_in_bucket(bucket)
        assert key.startswith("snapshots/") and key.endswith(suffix)
        assert moto.client().head_object(Bucket=bucket, Key=key)["ContentLength"] > mb << 20
        snap.unlink()
        for k in moto.keys_in_bucket(bucket):
            moto.client().delete_object(Bucket=bucket, Key=k)
    print(f"peak RSS (MiB) of encrypt + upload: {peaks}")
    assert peaks[300] < 200, peaks                    # far below the snapshot's 300 MB
    assert peaks[300] - peaks[100] < 32, peaks        # flat: does not grow with the snapshot


# -- the daemon in front of an S3 that stops answering -------------------------------------------------


def daemon_config(tmp_path: Path, moto: MotoServer, bucket: str, endpoint: str, s3: Any = None) -> Path:
    """A coordinator (insecure; its one agent never answers) whose vault is ``bucket`` through ``endpoint``."""
    run = tmp_path / "run"
    run.mkdir(mode=0o750, exist_ok=True)
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(render_toml({
        "coordinator": {"state_dir": str(tmp_path / "state"), "insecure": True, "control_socket": str(run / "c.sock"),
                        "request_timeout": "1s"},
        "vault": {"backend": "s3", "keep": 5},
        "vault.s3": {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1", "prefix": "prod/",
                     "path_style": True, "credentials_file": str(moto.credentials_file(tmp_path / "s3.credentials")),
                     "part_size": PART, **(s3 or {})},
        "metrics": {"enabled": False},
        "members": [{"name": "m1", "agent": "tcp://127.0.0.1:9"}],
        "drill": {"enabled": False},
    }))
    return cfg


def timed(coord: Coordinator, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """etcdguardctl ARGS and how long it took to answer (a hung answer fails the test after 30 s)."""
    from tests.helpers.coordinator import run_ctl

    started = time.monotonic()
    r = run_ctl(*args, "--config", str(coord.config), timeout=30)
    return r, time.monotonic() - started


def test_status_and_snapshots_answer_at_once_while_s3_hangs(tmp_path, moto, bucket):
    """An endpoint that accepts connections and never answers: status and snapshots answer within about 2 s
    from the last listing, say that listing failed, when the last one answered and what it held."""
    proxy = SwitchProxy(moto.port)
    # each request gives up after 3 s and is tried once, so a listing fails within the test's patience
    cfg = daemon_config(tmp_path, moto, bucket, f"http://127.0.0.1:{proxy.port}",
                        {"connect_timeout": "2s", "read_timeout": "3s", "max_attempts": 1})
    snap = tmp_path / "snap.db"
    sha = synthetic_snapshot(snap, 9000)
    open_vault(load_coordinator_config(cfg)).add_file(snap, incoming(snap))
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    try:
        coord.start(env=quiet_env({"PYTHONUNBUFFERED": "1"}))
        coord.wait_ready()
        assert [e["sha256"] for e in coord.ctl_json("snapshots")] == [sha]

        proxy.hang()
        seen: list[float] = []

        def failed_listing_shown() -> Any:
            r, took = timed(coord, "status", "--json")
            seen.append(took)
            assert r.returncode == 0, r.stderr
            vault = json.loads(r.stdout)["vault"]
            return vault if vault["listing"]["state"] == "failed" else None

        vault = wait_until(failed_listing_shown, 40, interval=0.5, what="status to show the failed listing")
        # "at once": against the minutes a hanging S3 used to hold status for, with room for a busy machine
        assert max(seen) < STATUS_AT_ONCE, seen
        assert "did not answer" in vault["error"] and vault["listing"]["error"] == vault["error"]
        assert vault["count"] == 1 and vault["newest"]["sha256"] == sha   # what the last listing held
        assert vault["listing"]["listed_at"].endswith("Z") and vault["listing"]["age_seconds"] >= 0

        text, took = timed(coord, "status")
        assert text.returncode == 0 and took < STATUS_AT_ONCE, (took, text.stderr)
        assert "vault: LISTING FAILED" in text.stdout and "vault: empty" not in text.stdout, text.stdout
        assert "as last listed" in text.stdout and "1 snapshot(s)" in text.stdout and sha[:12] in text.stdout

        listed, took = timed(coord, "snapshots")
        assert listed.returncode == 0 and took < STATUS_AT_ONCE, (took, listed.stderr)
        assert sha[:12] in listed.stdout and "empty" not in listed.stdout
        assert "listing the vault failed" in listed.stderr and "as last listed" in listed.stderr
        as_json, took = timed(coord, "snapshots", "--json")
        assert as_json.returncode == 0 and took < STATUS_AT_ONCE
        assert [e["sha256"] for e in json.loads(as_json.stdout)] == [sha]

        # a restart while it hangs: nothing listed yet, which is not "empty" either
        assert coord.stop() == 0, coord.log_tail()
        coord.start(env=quiet_env({"PYTHONUNBUFFERED": "1"}))
        wait_until(lambda: timed(coord, "status", "--json")[0].returncode == 0, 30, interval=0.2,
                   what="the restarted coordinator to answer")
        r, took = timed(coord, "status")
        assert r.returncode == 0 and took < STATUS_AT_ONCE, (took, r.stderr)
        assert "vault: empty" not in r.stdout
        assert "vault: not listed yet" in r.stdout or "its contents are unknown" in r.stdout, r.stdout
        r, took = timed(coord, "snapshots", "--json")
        assert r.returncode == 1 and took < STATUS_AT_ONCE, (took, r.stderr)
        assert json.loads(r.stdout)["exit"] == 1 and "s3://" in r.stderr

        # the endpoint answers again: so does the listing
        proxy.forward()
        wait_until(lambda: json.loads(timed(coord, "status", "--json")[0].stdout)["vault"]["listing"]["state"] == "ok",
                   40, interval=0.5, what="the listing to answer again")
        assert [e["sha256"] for e in coord.ctl_json("snapshots")] == [sha]
    except BaseException:
        print(coord.log_tail(80))
        raise
    finally:
        coord.stop()
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_failed_copy_is_shown_counted_and_retried_once_s3_answers_again(tmp_path, moto, bucket, etcd_member):
    """A backup whose upload fails, then the retry (a scheduled pull) failing the same way: status shows the
    last failure and its reason until a copy succeeds, the next pull is its retry, the failure counter and
    the off-site confirmation agree with it, and the copy is retried as soon as S3 answers again."""
    from tests.helpers.agents import AgentProcess, CoordinatorKeys
    from tests.helpers.coordinator import coordinator_config, scrape
    from tests.helpers.net import free_port

    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path])
    proxy = SwitchProxy(moto.port)
    port = free_port()
    cfg = coordinator_config(tmp_path, ckeys, [agent], port, extra={
        "vault": {"backend": "s3", "interval": "1h"},
        "vault.s3": {"bucket": bucket, "endpoint": f"http://127.0.0.1:{proxy.port}", "region": "us-east-1",
                     "prefix": "prod/", "path_style": True, "connect_timeout": "2s", "read_timeout": "3s",
                     "max_attempts": 1,
                     "credentials_file": str(moto.credentials_file(tmp_path / "s3.credentials"))}})
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    failures = 'etcdguard_vault_failures_total{backend="s3",reason="backend"}'
    confirmed = "etcdguard_vault_offsite_last_success_timestamp_seconds"

    def status() -> Any:
        return coord.ctl_json("status")

    try:
        agent.start()
        coord.start(env=quiet_env({"PYTHONUNBUFFERED": "1"}))
        coord.wait_ready()
        first = wait_until(lambda: (status()["coordinator"]["last_pull"] or {}).get("sha256"), 60,
                           what="the first scheduled pull")
        before = scrape(port)
        assert before[confirmed] > 0 and before[failures] == 0

        # 1. a backup whose upload is cut (then S3 is down)
        etcd_member.put("/registry/after-the-first-pull", "x")
        proxy.cut_on(b"PUT /")
        r = coord.ctl("backup")
        assert r.returncode == 1 and proxy.cut.is_set(), r.stderr
        assert "uploading prod/snapshots/" in r.stderr, r.stderr
        report = status()
        co = report["coordinator"]
        failed = co["last_failure"]
        assert (failed["kind"], failed["reason"], co["failures_in_a_row"], co["next_pull_retries"]) == (
            "backup", "backend", 1, True)
        assert "uploading" in failed["message"] and co["last_pull"] == failed
        assert 0 < co["next_pull_in_seconds"] <= 30                        # the retry, not the hourly pull
        text = coord.ctl("status").stdout
        assert "last copy FAILED" in text and "last pull ok" not in text and "a retry" in text, text
        m = scrape(port)
        assert m[failures] == 1 == co["failures_in_a_row"]
        assert m['etcdguard_vault_backend_failures_total{backend="s3",op="upload",reason="unreachable"}'] >= 1
        at_failure = m[confirmed]   # the backup's own listings answered before its upload failed
        assert at_failure >= before[confirmed]
        # S3 is down: status lists, fails, and still shows the failure (the listing is not a copy)
        wait_until(lambda: status()["vault"]["listing"]["state"] == "failed", 30, interval=0.5,
                   what="the listing to fail")
        assert scrape(port)[confirmed] == at_failure

        # 2. S3 answers listings again (the retry starts at once), and cuts that upload too
        proxy.cut_on(b"PUT /")
        proxy.forward()
        co = wait_until(lambda: (c := status()["coordinator"])["failures_in_a_row"] == 2 and c, 30, interval=0.5,
                        what="the retry to fail as well")
        assert (co["last_failure"]["kind"], co["last_failure"]["reason"]) == ("scheduled", "backend")
        assert co["failing_since_unix"] == failed["at"] and 0 < co["next_pull_in_seconds"] <= 60
        m = scrape(port)
        assert m[failures] == 2 == co["failures_in_a_row"]
        assert m[confirmed] == at_failure   # listings answered, the copy did not arrive: not confirmed
        assert m["etcdguard_vault_offsite_age_seconds"] > 0

        # 3. S3 is back for good: retried at once (well before the 60 s backoff), then shown as ok
        wait_until(lambda: status()["vault"]["listing"]["state"] == "failed", 30, interval=0.5,
                   what="the listing to fail again")
        proxy.forward()
        started = time.monotonic()
        co = wait_until(lambda: (c := status()["coordinator"])["last_failure"] is None and c, 45, interval=0.5,
                        what="the retry to succeed")
        assert time.monotonic() - started < 30
        newest = status()["members"][0]["newest_backup"]["sha256"]
        assert co["last_pull"]["ok"] and co["last_pull"]["sha256"] == newest != first
        assert co["failures_in_a_row"] == 0 and co["next_pull_retries"] is False
        assert co["next_pull_in_seconds"] > 1800                           # the interval again
        assert "last pull ok" in coord.ctl("status").stdout
        assert newest in [e["sha256"] for e in coord.ctl_json("snapshots")]
        m = scrape(port)
        assert m[failures] == 2 and m[confirmed] > at_failure
    except BaseException:
        print(coord.log_tail(120))
        print(agent.log_tail(40))
        raise
    finally:
        coord.stop()
        agent.stop()
        proxy.close()


# -- continuous backup's segments -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3", "dir"])
def test_segments_round_trip_encrypted_listed_apart_from_snapshots(tmp_path, moto, bucket, backend):
    from etcdguard.common.capture.segment import PUT, Event, encode

    need_age()
    identity, recipient = age_keypair(tmp_path / "keys")
    config = config_for(tmp_path, moto, bucket, backend=backend, recipients=[recipient], identity=identity)
    vault = open_vault(config)
    vault.prepare()
    events = [Event(r, 1_790_000_000_000 + r, PUT, b"/registry/secrets/s", b"top-secret-%d" % r) for r in range(8, 12)]
    info, data = encode(events, cluster_id="7e3a1c0f", member="m1", first=8, last=11)
    stored = vault.segments.write("7e3a1c0f", info, data)
    assert stored.encrypted and stored.name.endswith(".jsonl.age")
    if backend == "s3":
        keys = moto.keys_in_bucket(bucket)
        assert keys == [f"prod/segments/{stored.name}"]
        at_rest = moto.client().get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    else:
        at_rest = (tmp_path / "vault" / "segments" / stored.name).read_bytes()
    assert is_age_file(at_rest) and b"top-secret" not in at_rest and b"c2VjcmV0" not in at_rest
    fresh = open_vault(config)                 # a restarted coordinator: the listing alone tells the range
    fresh.prepare()
    assert fresh.list() == []
    assert [s.info for s in fresh.segments.refresh()] == [info]
    assert fresh.segments.read(stored).events == tuple(events)
    fresh.segments.delete(stored)
    assert fresh.segments.refresh() == ()
