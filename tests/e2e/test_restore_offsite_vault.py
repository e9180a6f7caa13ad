"""The cluster restore from an S3 (moto_server), age-encrypted vault: the same end state as from the directory
vault, with nothing in the bucket in plaintext and the pre-restore safety snapshot pinned there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import KEYS, seed
from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.helpers.etcd import EtcdCluster
from tests.helpers.restore_rig import RestoreRig
from tests.helpers.s3 import MotoServer, age_keypair
from tests.integration.test_vault_s3 import need_age

pytestmark = pytest.mark.slow


def keys_on_prefix(member, prefix: str) -> list[str]:
    return [k for k in member.etcdctl("get", "--prefix", prefix, "--keys-only").stdout.split() if k]


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_cluster_restore_from_an_encrypted_s3_vault(etcd_cluster3: EtcdCluster, tmp_path: Path, etcd_build):
    need_age()
    identity, recipient = age_keypair(tmp_path / "keys")
    moto = MotoServer(tmp_path / "moto").start()
    rig = None
    try:
        moto.create_bucket("etcd-vault")
        seed(etcd_cluster3)
        rig = RestoreRig(etcd_cluster3, tmp_path, apiservers=True, coordinator_sections={
            "vault": {"backend": "s3", "encrypt_to": [recipient], "age_identity": str(identity)},
            "vault.s3": {"bucket": "etcd-vault", "endpoint": moto.endpoint, "prefix": "prod/", "path_style": True,
                         "credentials_file": str(moto.credentials_file(tmp_path / "s3.credentials"))},
        }).start()
        cluster = rig.cluster
        old_id = int(cluster.members[0].status()["header"]["cluster_id"])
        entry = rig.backup()
        assert entry["encrypted"] is True and entry["path"] == ""
        disaster(cluster)

        plan = rig.ctl_json("restore", "latest", "--plan")
        assert plan["refused"] is False and plan["snapshot"]["id"] == entry["sha256"]
        r = rig.ctl("restore", entry["sha256"][:12], "--yes", "--plan-id", plan["plan_id"], "--json")
        assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
        summary = json.loads(r.stdout)
        assert summary["state"] == "done"
        assert [p["phase"] for p in summary["phases"]] == ["preflight", "stage", "prepare", "fence", "stop", "swap",
                                                           "start", "verify", "unfence", "restart-controllers"]
        assert_restored(cluster, old_id, entry["revision"], etcd_build.supports_bump_revision)
        assert len(keys_on_prefix(cluster.members[0], "/registry/demo/")) == KEYS

        keys = moto.keys_in_bucket("etcd-vault")
        snapshots = [k for k in keys if k.startswith("prod/snapshots/")]
        assert snapshots and all(k.endswith(".db.zst.age") for k in snapshots)   # compressed, then encrypted
        pre = summary["pre_restore_snapshot"]
        assert any(k.startswith(f"prod/pins/{pre}~pre-restore") for k in keys), keys
        listed = {e["sha256"]: e for e in rig.ctl_json("snapshots")}
        assert listed[pre]["pinned"].startswith("pre-restore")
        # no plaintext copy was left on the coordinator's host either
        assert list((tmp_path / "cstate" / "vault-work").iterdir()) == []
    except BaseException:
        if rig is not None:
            rig.dump_logs()
        raise
    finally:
        if rig is not None:
            rig.stop()
        moto.stop()


def object_of(moto: MotoServer, sha: str) -> str:
    (key,) = [k for k in moto.keys_in_bucket("etcd-vault") if k.startswith(f"prod/snapshots/{sha}~")]
    return key


def refused(rig: RestoreRig, *words: str) -> None:
    """`restore latest --plan` exits 3 naming the problem; `--yes` exits 3 and pins, takes and starts nothing."""
    plan = rig.ctl("restore", "latest", "--plan")
    assert plan.returncode == 3, f"{plan.stdout}\n{plan.stderr}"
    for w in words:
        assert w in plan.stdout, (w, plan.stdout)
    before = rig.ctl_json("snapshots")
    r = rig.ctl("restore", "latest", "--yes")
    assert r.returncode == 3, f"{r.stdout}\n{r.stderr}"
    assert "restore refused, nothing was changed" in r.stderr and words[0] in r.stderr, r.stderr
    assert rig.ops() == []                                             # no journal
    assert rig.ctl_json("snapshots") == before                         # no safety snapshot, no pin
    assert not any(e["pinned"] for e in before)


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
# with age: the ETag, metadata and full-verification checks are the plain copy's, plus the decryption
@pytest.mark.parametrize("encrypted", [True], ids=["age"])
def test_a_rewritten_s3_copy_is_refused_at_plan_time(etcd_factory, etcd_build, tmp_path: Path, encrypted: bool):
    """The plan checks the S3 copy against the ETag and size the coordinator recorded in its own state (a
    rewritten object, one byte flipped: refused), its metadata (dropped: refused), and, with no record (a new
    coordinator host), downloads, decrypts and verifies it in full once."""
    cluster = etcd_factory.cluster(etcd_build, size=1)
    cluster.members[0].put("/registry/k", "v")
    moto = MotoServer(tmp_path / "moto").start()
    rig = None
    vault: dict[str, object] = {"backend": "s3"}
    if encrypted:
        need_age()
        identity, recipient = age_keypair(tmp_path / "keys")
        vault.update(encrypt_to=[recipient], age_identity=str(identity))
    try:
        moto.create_bucket("etcd-vault")
        rig = RestoreRig(cluster, tmp_path, coordinator_sections={"vault": vault, "vault.s3": {
            "bucket": "etcd-vault", "endpoint": moto.endpoint, "prefix": "prod/", "path_style": True,
            "credentials_file": str(moto.credentials_file(tmp_path / "s3.credentials"))}}).start()
        entry = rig.backup()
        assert entry["encrypted"] is encrypted
        records = rig.state_dir / "vault-objects.json"
        key = object_of(moto, entry["sha256"])
        s3 = moto.client()
        original = s3.get_object(Bucket="etcd-vault", Key=key)
        body, meta = original["Body"].read(), original["Metadata"]
        assert json.loads(records.read_text())["objects"]["s3://etcd-vault/prod/"][entry["sha256"]]["how"] == \
            "uploaded"
        assert rig.ctl("restore", "latest", "--plan").returncode == 0   # the recorded copy: a HEAD, no download

        def new_host() -> None:
            """A coordinator without the record: the next plan verifies the copy in full."""
            rig.coordinator.stop()
            records.unlink(missing_ok=True)
            rig.start_coordinator()

        new_host()
        plan = rig.ctl("restore", "latest", "--plan")
        assert plan.returncode == 0, plan.stdout
        assert json.loads(records.read_text())["objects"]["s3://etcd-vault/prod/"][entry["sha256"]]["how"] == \
            "verified"

        # one byte flipped, the metadata kept: the ETag is not the recorded one
        flipped = bytearray(body)
        flipped[len(flipped) // 2] ^= 0x01
        s3.put_object(Bucket="etcd-vault", Key=key, Body=bytes(flipped), Metadata=meta)
        refused(rig, "changed since the coordinator verified it", "rewritten in the storage")
        new_host()                   # no record: downloaded and checked, so refused all the same
        if encrypted:
            refused(rig, f"cannot be decrypted with [vault] age_identity {identity}")
        else:
            refused(rig, "reading it back in full", "altered or damaged")

        # the metadata dropped (the bytes as they were): refused with or without a record
        s3.put_object(Bucket="etcd-vault", Key=key, Body=body, Metadata=meta)
        assert rig.ctl("restore", "latest", "--plan").returncode == 0       # verified in full again, recorded
        s3.copy_object(Bucket="etcd-vault", Key=key, CopySource={"Bucket": "etcd-vault", "Key": key},
                       Metadata={}, MetadataDirective="REPLACE")
        refused(rig, "carries no snapshot sha256 in its metadata")
        new_host()
        refused(rig, "carries no snapshot sha256 in its metadata")

        if encrypted:   # a new host given an identity the copy was not encrypted to
            s3.put_object(Bucket="etcd-vault", Key=key, Body=body, Metadata=meta)
            other, _ = age_keypair(tmp_path / "keys", "other")
            config = rig.coordinator.config
            text = config.read_text().replace(str(identity), str(other))
            config.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("encrypt_to")) + "\n")
            new_host()
            refused(rig, f"cannot be decrypted with [vault] age_identity {other}", "no identity matched")
    except BaseException:
        if rig is not None:
            rig.dump_logs()
        raise
    finally:
        if rig is not None:
            rig.stop()
        moto.stop()
