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
        assert snapshots and all(k.endswith(".db.age") for k in snapshots)
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
