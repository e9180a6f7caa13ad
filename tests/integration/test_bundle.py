"""The node bundle (PKI, static-pod manifests, kubeadm config beside each snapshot) and, end to end, an
agent and a coordinator whose vault is an age-encrypted S3 bucket (moto_server): backup, dedup of an idle
cluster, the bundle pulled, export of both, pins, the metrics."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from etcdguard.agent.config import load_agent_config
from etcdguard.agent.control.transfer import NotFound
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.agent.snapshots.bundle import read_chunk
from etcdguard.common.base.agekeys import is_age_file

from tests.helpers.agentconf import agent_sections, render_toml, write_agent_config
from tests.helpers.etcd import snapshot_status_json
from tests.helpers.s3 import MotoServer, age_keypair, quiet_env
from tests.integration.test_vault_s3 import need_age


def node_files(root: Path) -> dict[str, Any]:
    """What a kubeadm node keeps outside etcd, in miniature, with the modes that matter."""
    pki = root / "pki"
    (pki / "etcd").mkdir(parents=True)
    (pki / "etcd" / "ca.key").write_text("-----BEGIN EC PRIVATE KEY-----\nsecret\n")
    os.chmod(pki / "etcd" / "ca.key", 0o600)
    (pki / "etcd" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    os.chmod(pki / "etcd" / "ca.crt", 0o644)
    (pki / "sa.key").write_text("sa\n")
    os.chmod(pki / "sa.key", 0o600)
    manifests = root / "manifests"
    manifests.mkdir()
    (manifests / "etcd.yaml").write_text("apiVersion: v1\nkind: Pod\n")
    os.chmod(manifests / "etcd.yaml", 0o600)
    kubeadm = root / "kubeadm-config.yaml"
    kubeadm.write_text("kind: ClusterConfiguration\n")
    return {"paths": [str(pki), str(manifests), str(kubeadm), str(root / "absent.conf")]}


def members_of(tar_bytes: bytes) -> dict[str, int]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return {m.name: stat.S_IMODE(m.mode) for m in tar.getmembers()}


def runner_for(member: Any, workdir: Path, bundle: dict[str, Any]) -> BackupRunner:
    workdir.mkdir(parents=True, exist_ok=True)
    sections = agent_sections(member, workdir)
    sections["bundle"] = bundle
    config = load_agent_config(write_agent_config(workdir / "agent.toml", sections))
    runner = BackupRunner(config, discover(config), AgentMetrics())
    runner.store.prepare()
    return runner


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_bundle_is_encrypted_beside_the_snapshot_and_holds_the_paths_with_modes(tmp_path, etcd_member):
    need_age()
    identity, recipient = age_keypair(tmp_path / "keys")
    files = node_files(tmp_path / "node")
    runner = runner_for(etcd_member, tmp_path / "agent", {**files, "encrypt_to": [recipient]})
    meta = runner.run_once()
    assert meta.bundle == "encrypted"
    path = runner.store.bundle_path(meta.name, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert is_age_file(raw) and b"secret" not in raw
    plain = subprocess.run(["age", "-d", "-i", str(identity)], input=raw, capture_output=True, check=True).stdout
    root = str(tmp_path / "node").lstrip("/")
    modes = members_of(plain)
    assert modes[f"{root}/pki/etcd/ca.key"] == 0o600 and modes[f"{root}/pki/etcd/ca.crt"] == 0o644
    assert modes[f"{root}/pki/sa.key"] == 0o600 and modes[f"{root}/manifests/etcd.yaml"] == 0o600
    assert f"{root}/kubeadm-config.yaml" in modes and not any("absent" in n for n in modes)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        owner = tar.getmember(f"{root}/pki/etcd/ca.key")
        assert (owner.uid, owner.gid) == (os.getuid(), os.getgid())
    listed = runner.store.list()[0]
    assert (listed.name, listed.bundle) == (meta.name, "encrypted")
    result, data = read_chunk(runner.store, meta.name, 0, 1 << 20)
    assert data == raw and result["total"] == len(raw) and result["eof"]
    # retention takes the bundle with its snapshot
    runner.store.delete(listed)
    assert not path.exists()


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_without_a_recipient_the_bundle_stays_on_the_node_and_check_warns(tmp_path, etcd_member):
    files = node_files(tmp_path / "node")
    runner = runner_for(etcd_member, tmp_path / "agent", files)
    meta = runner.run_once()
    assert meta.bundle == "local"
    local = runner.store.bundle_path(meta.name, False)
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert not runner.store.bundle_path(meta.name, True).exists()
    assert "ca.key" in str(members_of(local.read_bytes()))
    with pytest.raises(NotFound, match=r"not encrypted .* stays on this node"):
        read_chunk(runner.store, meta.name, 0, 1024)
    from etcdguard.agent.checks import run_checks

    checks = {c.name: c for c in run_checks(runner.config, runner.member)}
    bundle = checks["node bundle"]
    assert bundle.ok and bundle.warning and "NOT encrypted" in bundle.detail
    assert "encrypt_to" in bundle.hint


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_the_coordinator_fetches_a_bundle_through_the_credit_based_transfer(tmp_path, etcd_member):
    """Small chunks with several in flight, each reply checked against the size and sha256 the agent declared;
    an oversized or missing bundle leaves nothing behind."""
    need_age()
    from etcdguard.common.base.errors import SnapshotCorrupt
    from etcdguard.common.wire.protocol import NOT_FOUND, RemoteError

    from tests.helpers.agents import AgentProcess, CoordinatorKeys

    _, recipient = age_keypair(tmp_path / "keys")
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path],
                         sections={"bundle": {**node_files(tmp_path / "node"), "encrypt_to": [recipient]}})
    assert agent.seeded is not None and agent.seeded.bundle == "encrypted"
    raw = agent.store().bundle_path(agent.seeded.name, True).read_bytes()
    assert len(raw) > 3 * 1000
    out = tmp_path / "out"
    out.mkdir()
    seen: list[tuple[int, int]] = []
    agent.start()
    try:
        with agent.client(ckeys) as client:
            client.fetch_bundle(agent.seeded.name, out / "bundle.tar.age", max_size=1 << 20, chunk=1000, credit=3,
                                progress=lambda done, total: seen.append((done, total)))
            assert (out / "bundle.tar.age").read_bytes() == raw
            assert len(seen) >= 3 and seen[-1] == (len(raw), len(raw))   # in 1000-byte chunks
            with pytest.raises(SnapshotCorrupt, match=rf"refused a {len(raw)}-byte node bundle"):
                client.fetch_bundle(agent.seeded.name, out / "big.tar.age", max_size=len(raw) - 1)
            with pytest.raises(RemoteError) as missing:
                client.fetch_bundle("snap-20261201T000000.000Z-r1.db", out / "none.tar.age", max_size=1 << 20)
            assert missing.value.code == NOT_FOUND
    finally:
        agent.stop()
    assert sorted(os.listdir(out)) == ["bundle.tar.age"]


# -- end to end: agent, coordinator, an encrypted S3 vault -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_backup_into_an_encrypted_s3_vault_with_bundle_export_pins_and_dedup(etcd_factory, etcd_build, tmp_path):
    need_age()
    from tests.helpers.agents import AgentProcess, CoordinatorKeys
    from tests.helpers.coordinator import Coordinator, scrape
    from tests.helpers.net import free_port

    member = etcd_factory.member(etcd_build)
    for i in range(30):
        member.put(f"/registry/k{i}", "v" * 300)
    identity, recipient = age_keypair(tmp_path / "keys")
    files = node_files(tmp_path / "node")
    moto = MotoServer(tmp_path / "moto").start()
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(member, tmp_path / "agent", authorized=[ckeys.public_path],
                         sections={"bundle": {**files, "encrypt_to": [recipient]}})
    coord = None
    try:
        moto.create_bucket("etcd-vault")
        agent.start()
        run = tmp_path / "run"
        run.mkdir(mode=0o750)
        port = free_port()
        cfg = tmp_path / "coordinator.toml"
        cfg.write_text(render_toml({
            "coordinator": {"state_dir": str(tmp_path / "cstate"), "control_socket": str(run / "c.sock"),
                            "secret_key": str(ckeys.secret_path), "request_timeout": "3s"},
            "vault": {"backend": "s3", "interval": "1h", "keep": 10, "timeout": "2m", "encrypt_to": [recipient],
                      "age_identity": str(identity)},
            "vault.s3": {"bucket": "etcd-vault", "endpoint": moto.endpoint, "prefix": "prod/", "path_style": True,
                         "credentials_file": str(moto.credentials_file(tmp_path / "s3.credentials"))},
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "drill": {"enabled": False},
        }) + f'[[members]]\nname = "{member.name}"\nagent = "{agent.endpoint}"\n'
             f'public_key = "{agent.key_dir / "agent.key"}"\n')
        coord = Coordinator(cfg, tmp_path / "coordinator.log")
        coord.start(quiet_env())
        coord.wait_ready()

        member.put("/registry/after-start", "x")
        first = coord.ctl_json("backup")
        entry = first["entry"]
        assert first["pulled"] is True and entry["encrypted"] is True and entry["bundle"] is True
        keys = moto.keys_in_bucket("etcd-vault")
        snapshots = [k for k in keys if k.startswith("prod/snapshots/")]
        assert snapshots and all(k.endswith(".db.zst.age") for k in snapshots)   # compressed, then encrypted
        assert f"prod/bundles/{entry['sha256']}.tar.age" in keys

        # an idle cluster: a new snapshot of the same revision is not stored again
        again = coord.ctl("backup")
        assert again.returncode == 0, again.stderr
        assert "already in the vault" in again.stdout and "same revision" in again.stdout
        assert len([k for k in moto.keys_in_bucket("etcd-vault") if k.startswith("prod/snapshots/")]) == len(
            snapshots)

        listed = coord.ctl_json("snapshots")
        assert listed[0]["sha256"] == entry["sha256"] and listed[0]["bundle"] is True
        table = coord.ctl("snapshots").stdout
        assert "BUNDLE" in table and "PINNED" in table

        out = tmp_path / "export.db"
        r = coord.ctl("export", entry["sha256"][:8], "--output", str(out))
        assert r.returncode == 0, r.stderr
        assert "verified" in r.stdout
        assert snapshot_status_json(member.build, out)["revision"] == entry["revision"]
        bundle_out = tmp_path / "bundle.tar"
        r = coord.ctl("export", "latest", "--bundle", "--output", str(bundle_out))
        assert r.returncode == 0, r.stderr
        root = str(tmp_path / "node").lstrip("/")
        assert members_of(bundle_out.read_bytes())[f"{root}/pki/etcd/ca.key"] == 0o600
        raw_out = tmp_path / "raw.age"
        assert coord.ctl("export", "latest", "--raw", "--output", str(raw_out)).returncode == 0
        assert is_age_file(raw_out.read_bytes())

        pinned = coord.ctl_json("pin", "latest", "--reason", "before the upgrade")
        assert pinned["pinned"] == "before the upgrade"
        assert "before the upgrade" in coord.ctl("snapshots").stdout
        assert coord.ctl_json("snapshots")[0]["pinned"] == "before the upgrade"
        assert coord.ctl_json("unpin", entry["sha256"][:10])["pinned"] is None
        bad = coord.ctl("pin", "latest", "--reason", "semi;colon")
        assert bad.returncode == 2 and "pin reason" in bad.stderr

        m = scrape(port)
        # the seeded snapshot (pulled at start, the vault being empty) and the backup
        assert m['etcdguard_vault_snapshots_retained{backend="s3"}'] == len(listed) == 2
        assert m['etcdguard_vault_offsite_age_seconds{backend="s3"}'] < 600
        assert m['etcdguard_vault_age_seconds{backend="s3"}'] < 600
        status_report = coord.ctl_json("status")
        assert status_report["vault"]["backend"] == "s3" and status_report["vault"]["dir"] == "s3://etcd-vault/prod/"
    except BaseException:
        if coord is not None:
            print(f"\n[coordinator log]\n{coord.log_tail(120)}")
        print(f"\n[agent]\n{agent.log_tail(60)}")
        raise
    finally:
        if coord is not None:
            coord.stop()
        agent.stop()
        moto.stop()
