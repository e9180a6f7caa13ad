"""IPv6 end to end: a real etcd (3.4 and 3.5) on ``[::1]``, reached only through bracketed endpoints.

Snapshot (plain and TLS), status and member list, the stop proof, a node-local
restore with the process runtime, the agent's metrics on ``[::1]`` and its
ZeroMQ control server on ``tcp://[::1]:PORT`` answering the coordinator's
client. Assertions about "closed" and "served" are made with the test's own
AF_INET6 sockets and HTTP requests, independently of the code under test.
"""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.runtime.proof import etcd_proof
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.metrics_server import MetricsServer

from tests.conftest import EtcdFactory
from tests.helpers.agentconf import adopt, agent_sections, run_agent, write_agent_config
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import Coordinator, lone_coordinator_config
from tests.helpers.etcd import EtcdBuild, EtcdMember, snapshot_status_json
from tests.helpers.net import free_server_port, wait_until
from tests.helpers.tls import TLSMaterial
from tests.integration.test_restore import check_restore_and_rollback

V6 = "::1"


@pytest.fixture
def member6(etcd_factory: EtcdFactory, etcd_build: EtcdBuild) -> EtcdMember:
    """One plain-HTTP member listening on [::1] only, started and healthy."""
    return etcd_factory.member(etcd_build, host=V6)


def refused6(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((V6, port)) != 0


def http_get(url: str) -> Optional[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.read().decode() if int(resp.status) == 200 else None
    except OSError:
        return None


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_snapshot_and_status_over_ipv6(etcd_factory: EtcdFactory, etcd_build: EtcdBuild,
                                       tls_material: TLSMaterial, tmp_path: Path, tls: bool) -> None:
    member = etcd_factory.member(etcd_build, tls=tls_material if tls else None, host=V6)
    assert member.client_url.startswith(("http://[::1]:", "https://[::1]:"))
    for i in range(20):
        member.put(f"/v6/{i}", f"value {i}")
    expected_revision = member.revision()

    client_tls = ClientTLS(tls_material.ca_cert, tls_material.client_cert, tls_material.client_key) if tls else None
    with EtcdClient(member.client_url, client_tls) as client:
        status = client.status()
        assert status.healthy and status.revision == expected_revision
        assert status.member_id == member.member_id()
        assert [(m.name, m.client_urls, m.peer_urls) for m in client.members()] == [
            (member.name, (member.client_url,), (member.peer_url,))]

    out = tmp_path / "snap.db"
    r = run_agent("snapshot", *member.etcdctl_env_args(), "--output", str(out), "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["revision"] == expected_revision
    assert meta["size"] == out.stat().st_size
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert run_agent("verify", str(out)).returncode == 0
    # etcd's own tool reads the same file the same way
    assert snapshot_status_json(member.build, out)["revision"] == expected_revision


def test_stop_proof_over_ipv6(member6: EtcdMember) -> None:
    proof = etcd_proof([member6.client_url], member6.data_dir)
    ok, why = proof.check()
    assert not ok
    assert f"port [::1]:{member6.client_port} still answers" in why and "is locked by" in why
    assert f"[::1]:{member6.client_port}" in proof.describe()

    member6.stop(kill=True)
    assert refused6(member6.client_port)
    def proven() -> Optional[str]:
        ok, why = proof.check()
        return why if ok else None

    why = wait_until(proven, 10, what="the proof to hold")  # a killed etcd may take a moment to be reaped
    assert f"port [::1]:{member6.client_port} closed" in why and "flock obtainable" in why


def test_node_local_restore_over_ipv6(member6: EtcdMember, tmp_path: Path) -> None:
    """The process runtime stops, swaps and starts an etcd whose URLs are all [::1]."""
    sections = agent_sections(member6, tmp_path)
    assert sections["etcd"]["endpoints"] == [member6.client_url] and "[::1]" in sections["etcd"]["peer_url"]
    sections["restore"] = {"stop_timeout": "20s", "start_timeout": "30s"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    adopt(member6, tmp_path / "etcd.pid")
    check_restore_and_rollback(member6, cfg)
    assert member6.healthy()


def test_metrics_server_binds_ipv6() -> None:
    metrics = AgentMetrics()
    server = MetricsServer(metrics.registry, "[::1]:0")
    server.start()
    try:
        assert server.host == V6 and server.port > 0 and server.url == f"http://[::1]:{server.port}/metrics"
        body = http_get(f"http://[::1]:{server.port}/metrics")
        assert body is not None and "etcdguard_build_info{" in body
    finally:
        server.stop()
    assert refused6(server.port)


def test_coordinator_serves_metrics_on_ipv6_and_logs_the_address_in_brackets(tmp_path: Path) -> None:
    port = free_server_port(V6)
    coord = Coordinator(lone_coordinator_config(tmp_path, metrics_port=port, metrics_host=V6),
                        tmp_path / "coordinator.log")
    coord.start()
    try:
        coord.wait_ready()
        body = wait_until(lambda: http_get(f"http://[::1]:{port}/metrics"), 30, what="the coordinator's metrics")
        assert "etcdguard_restore_in_progress 0.0" in body, body[:500]
        assert f"metrics on http://[::1]:{port}/metrics" in coord.log_path.read_text()
    finally:
        coord.stop()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_agent_serves_control_channel_and_metrics_on_ipv6(member6: EtcdMember, tmp_path: Path) -> None:
    ckeys = CoordinatorKeys.create(tmp_path / "coordinator-keys")
    metrics_port = free_server_port(V6)
    agent = AgentProcess(member6, tmp_path / "agent", authorized=[ckeys.public_path],
                         sections={"metrics": {"enabled": True, "listen": f"[::1]:{metrics_port}"}})
    assert agent.endpoint == f"tcp://[::1]:{agent.port}"
    assert agent.seeded is not None
    agent.start()
    try:
        body = wait_until(lambda: http_get(f"http://[::1]:{metrics_port}/metrics"), 15,
                          what="the agent's metrics on [::1]")
        assert "etcdguard_snapshots_retained 1.0" in body
        with agent.client(ckeys) as client:
            st = client.status()
            assert st["member"]["endpoints"] == [member6.client_url]
            assert st["etcd"]["healthy"] is True and st["etcd"]["revision"] == member6.revision()
            dest = tmp_path / "vault" / "copy.db"
            dest.parent.mkdir()
            client.fetch_snapshot(agent.seeded.name, dest, expected_sha256=agent.seeded.sha256,
                                  expected_size=agent.seeded.size)
            assert hashlib.sha256(dest.read_bytes()).hexdigest() == agent.seeded.sha256
        assert "control server on tcp://[::1]:" in agent.log_text()
        assert f"metrics on http://[::1]:{metrics_port}/metrics" in agent.log_text()
    finally:
        assert agent.stop() == 0
    assert refused6(agent.port) and refused6(metrics_port)
