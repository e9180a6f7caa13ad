"""Snapshots against a real etcd (3.4 and 3.5), plain and TLS."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import pytest
from etcdguard.agent.config import load_agent_config
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.base.polling import poll

from tests.helpers.agentconf import AGENT, agent_sections, run_agent, write_agent_config
from tests.helpers.etcd import snapshot_status_json
from tests.helpers.net import wait_until
from tests.helpers.proxy import SlowProxy


def snapshot_status(member, path: Path) -> dict:
    return snapshot_status_json(member.build, path)


def write_keys(member, n: int, prefix: str = "/k/") -> None:
    for i in range(n):
        member.put(f"{prefix}{i:04d}", f"value-{i}")


def test_snapshot_cli_without_config_plain(etcd_member, tmp_path):
    check_snapshot_cli_without_config(etcd_member, tmp_path)


def test_snapshot_cli_without_config_tls(etcd_member_tls, tmp_path):
    check_snapshot_cli_without_config(etcd_member_tls, tmp_path)


def check_snapshot_cli_without_config(member, tmp_path):
    write_keys(member, 20)
    out_file = tmp_path / "snap.db"
    r = run_agent("snapshot", *member.etcdctl_env_args(), "--output", str(out_file), "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    for key in ("path", "size", "sha256", "revision", "created_at"):
        assert key in meta
    data = out_file.read_bytes()
    assert meta["path"] == str(out_file)
    assert meta["size"] == len(data)
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    status = snapshot_status(member, out_file)
    assert status["revision"] == meta["revision"] == member.revision()
    assert status["totalSize"] + 32 == meta["size"]
    assert out_file.stat().st_mode & 0o777 == 0o600
    # what a restore drill proves a restored store against: recorded at the snapshot's own revision
    member.put("/k/after-the-snapshot", "changes hashkv and the count now, not at the snapshot's revision")
    assert meta["hashkv"] == member.hashkv(meta["revision"]) != member.hashkv()
    counted = json.loads(member.etcdctl("get", "", "--prefix", "--keys-only", f"--rev={meta['revision']}",
                                        "-w", "json").stdout)
    assert meta["key_count"] == int(counted["count"]) == 20
    assert isinstance(meta["hashkv_compact_revision"], int)

    assert run_agent("verify", str(out_file)).returncode == 0
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    out_file.write_bytes(bytes(corrupted))
    bad = run_agent("verify", str(out_file))
    assert bad.returncode == 1
    assert "trailer does not match" in bad.stderr


def test_plain_http_to_tls_member_fails_cleanly(etcd_member_tls, tmp_path):
    url = etcd_member_tls.client_url.replace("https://", "http://")
    out = tmp_path / "out"
    out.mkdir()
    r = run_agent("snapshot", f"--endpoints={url}", "--output", str(out / "x.db"))
    assert r.returncode == 1
    assert "did not answer" in r.stderr
    assert list(out.iterdir()) == []


def test_store_retention_and_sidecars(etcd_member, tmp_path):
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    sections["backup"]["keep"] = 2
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    revisions = []
    for i in range(3):
        etcd_member.put(f"/round/{i}", "x")
        r = run_agent("--config", str(cfg), "snapshot", "--json")
        assert r.returncode == 0, r.stderr
        revisions.append(json.loads(r.stdout)["revision"])
    store = SnapshotStore(tmp_path / "snapshots")
    metas = store.list()
    assert [m.revision for m in metas] == sorted(revisions, reverse=True)[:2]
    for m in metas:
        assert snapshot_status(etcd_member, Path(m.path))["revision"] == m.revision
        assert m.revision_source == "snapshot-status"
        assert m.total_keys is not None and m.total_keys >= 3
        assert Path(m.path).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "snapshots").stat().st_mode & 0o777 == 0o700
    listed = json.loads(run_agent("--config", str(cfg), "snapshots", "--json").stdout)
    assert [x["name"] for x in listed] == [m.name for m in metas]
    # the CLI accepts --config after the subcommand too
    assert run_agent("snapshots", "--config", str(cfg)).returncode == 0


def test_failure_is_counted_and_last_good_kept(etcd_member, tmp_path):
    cfg = load_agent_config(write_agent_config(tmp_path / "agent.toml", agent_sections(etcd_member, tmp_path)))
    metrics = AgentMetrics()
    runner = BackupRunner(cfg, discover(cfg), metrics)
    runner.store.prepare()
    good = runner.run_once()
    etcd_member.stop(kill=True)
    with pytest.raises(EtcdUnavailable):
        runner.run_once()
    failures = metrics.registry.get_sample_value("etcdguard_backup_failures_total",
                                                 {"reason": "etcd_unavailable"})
    assert failures == 1
    assert metrics.registry.get_sample_value("etcdguard_etcd_up") == 0
    assert [m.name for m in runner.store.list()] == [good.name]
    assert metrics.registry.get_sample_value("etcdguard_backup_last_revision") == good.revision
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [good.name, good.name + ".json"]


def test_sigterm_during_snapshot_leaves_nothing(etcd_member, tmp_path):
    # ~6 MB through a proxy at 1.5 MB/s: the stream takes seconds, long enough to interrupt.
    big = "x" * 100_000
    for i in range(60):
        etcd_member.put(f"/bulk/{i}", big)
    proxy = SlowProxy(etcd_member.client_port, 1_500_000)
    try:
        sections = agent_sections(etcd_member, tmp_path, runtime=None)
        sections["etcd"]["endpoints"] = [f"http://127.0.0.1:{proxy.port}"]
        cfg = write_agent_config(tmp_path / "agent.toml", sections)
        store_dir = tmp_path / "snapshots"
        proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            def temp_growing() -> bool:
                temps = list(store_dir.glob(".etcdguard-tmp-*")) if store_dir.exists() else []
                return any(t.stat().st_size > 500_000 for t in temps)
            wait_until(temp_growing, timeout=30, what="a partial snapshot being written")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert "aborted" in err
        assert sorted(p.name for p in store_dir.iterdir()) == []
    finally:
        proxy.close()


def test_daemon_notifies_ready_and_serves_metrics(etcd_member, tmp_path):
    import socket
    import urllib.request

    from tests.helpers.net import free_port

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    port = free_port()
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen([*AGENT, "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**__import__("os").environ, **env})
    try:
        messages: list[str] = []
        for _ in poll(30, interval=0, what="READY=1 from the agent"):
            messages.append(sock.recv(4096).decode())
            if any("READY=1" in m for m in messages):
                break
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=" in ready
        store = SnapshotStore(tmp_path / "snapshots")
        wait_until(lambda: len(store.list()) == 1, timeout=30, what="the start-up snapshot")
        meta = store.list()[0]

        def scrape() -> dict[str, float]:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            out = {}
            for line in body.splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
            return out

        wait_until(lambda: scrape().get("etcdguard_backup_last_size_bytes") == meta.size, timeout=10,
                   what="metrics reflecting the snapshot")
        m = scrape()
        assert m["etcdguard_backup_last_revision"] == meta.revision
        assert m["etcdguard_snapshots_retained"] == 1
        assert 0 <= m["etcdguard_backup_age_seconds"] < 60
        assert m["etcdguard_etcd_up"] == 1
        assert m['etcdguard_build_info{version="0.1.0"}'] == 1
        # the watchdog keeps being fed
        wait_until(lambda: "WATCHDOG=1" in sock.recv(4096).decode(), timeout=10, what="WATCHDOG=1")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        sock.close()
    assert proc.returncode == 0, err


def test_sighup_reloads_config(etcd_member, tmp_path):
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    store = SnapshotStore(tmp_path / "snapshots")
    log = tmp_path / "agent.log"
    with open(log, "w") as log_fh:
        proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL, stderr=log_fh)
    try:
        wait_until(lambda: len(store.list()) == 1, timeout=30, what="the start-up snapshot")
        # A broken config is refused and the running one kept ...
        cfg.write_text("[backup]\ninterval = 'soon'\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed, kept the running configuration" in log.read_text(), timeout=30,
                   what="the broken config to be refused")
        assert "backup.interval" in log.read_text()
        # ... a good one takes effect: interval 1h -> 1s means more snapshots soon.
        sections["backup"]["interval"] = "1s"
        write_agent_config(cfg, sections)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(store.list()) >= 3, timeout=30, what="snapshots at the reloaded interval")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert "configuration reloaded" in log.read_text()


def test_open_restore_postpones_backups_and_shows_in_status(etcd_member, tmp_path):
    import os
    import socket

    from etcdguard.agent.restore.records import KIND_LOCAL, OperationStore
    from etcdguard.common.ops.flows import NODE_RESTORE
    from etcdguard.common.ops.params import RestoreParams

    params = RestoreParams(op="r-open", snapshot="/s.db", snapshot_sha256="a" * 64, snapshot_size=1,
                           snapshot_revision=1, name="m1", peer_url="http://127.0.0.1:2380",
                           initial_cluster="m1=http://127.0.0.1:2380", token="t", data_dir=str(etcd_member.data_dir),
                           bump_revision=0, restore_argv=("/usr/bin/etcdutl", "snapshot", "restore", "/s.db"))
    log = OperationStore(tmp_path / "state").get("r-open").create(kind=KIND_LOCAL, flow=NODE_RESTORE, params=params)
    log.emit("step", step="prepare", status="done", result={"bytes": 1})
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    cfg = write_agent_config(tmp_path / "agent.toml", agent_sections(etcd_member, tmp_path, runtime=None))
    log = tmp_path / "agent.log"
    with open(log, "w") as log_fh:
        proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL, stderr=log_fh,
                                env={**os.environ, "NOTIFY_SOCKET": str(sock_path)})
    try:
        statuses: list[str] = []
        wait_until(lambda: statuses.append(sock.recv(4096).decode()) or any(
            "restore r-open running (prepare done)" in s for s in statuses), timeout=30,
            what="STATUS= naming the open restore")
        wait_until(lambda: "backup postponed" in log.read_text(), timeout=30, what="the backup to be postponed")
        assert SnapshotStore(tmp_path / "snapshots").list() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        sock.close()
    assert proc.returncode == 0, log.read_text()
