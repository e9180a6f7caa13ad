"""The etcd test harness itself: if these fail, every other integration test is suspect."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.helpers.etcd import (
    EtcdBuild,
    EtcdCluster,
    EtcdctlError,
    EtcdMember,
    build_for,
    load_data,
    missing_build_reason,
    run_etcdctl,
    value_for,
)
from tests.helpers.net import WaitTimeout, free_port, free_server_port, wait_until
from tests.helpers.tls import TLSMaterial

if TYPE_CHECKING:
    from tests.conftest import EtcdFactory


def test_wait_until_returns_value_and_names_what_timed_out() -> None:
    calls = []

    def third_time() -> int:
        calls.append(1)
        return 7 if len(calls) >= 3 else 0

    assert wait_until(third_time, timeout=5, interval=0.001) == 7
    with pytest.raises(WaitTimeout, match="the moon turning blue") as info:
        wait_until(lambda: False, timeout=0.05, what="the moon turning blue")
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, TimeoutError)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(20)] + [free_server_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        low = int(fh.read().split()[0])
    assert all(p < low for p in ports[20:])


def test_tls_material_is_private_and_verifies(tls_material: TLSMaterial) -> None:
    files = [tls_material.ca_cert, tls_material.ca_key, tls_material.server_cert,
             tls_material.server_key, tls_material.client_cert, tls_material.client_key]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tls_material.ca_cert),
         str(tls_material.server_cert), str(tls_material.client_cert)],
        capture_output=True, text=True, check=False,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(tls_material.server_cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text
    assert "DNS:localhost" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text


def test_member_put_get_round_trip(etcd_member: EtcdMember, etcd_build: EtcdBuild) -> None:
    m = etcd_member
    assert m.is_running() and m.pid in m.pids()
    assert m.status()["version"] == etcd_build.version
    rev0 = m.revision()
    m.put("/harness/plain", "v1")
    m.put("/harness/odd", "-starts-with-dash\nand two lines\n")
    assert m.get("/harness/plain") == "v1"
    assert m.get("/harness/odd") == "-starts-with-dash\nand two lines\n"
    assert m.get("/harness/missing") is None
    assert m.revision() == rev0 + 2
    # the connection flags work for etcdctl called directly, as other tests do
    out = run_etcdctl(etcd_build, [*m.etcdctl_env_args(), "get", "/harness/plain", "--print-value-only"])
    assert out.stdout.strip() == "v1"
    assert m.hashkv() != 0


def test_tls_member_round_trip_and_refuses_plain_or_certless(etcd_member_tls: EtcdMember) -> None:
    m = etcd_member_tls
    assert m.client_url.startswith("https://127.0.0.1:") and m.peer_url.startswith("https://")
    m.put("/harness/tls", "secret")
    assert m.get("/harness/tls") == "secret"
    assert m.healthy()

    plain = m.client_url.replace("https://", "http://")
    with pytest.raises(EtcdctlError, match="stderr") as info:
        run_etcdctl(m.build, [f"--endpoints={plain}", "--dial-timeout=1s", "--command-timeout=1s",
                              "get", "/harness/tls"])
    assert "secret" not in info.value.stdout
    # plain HTTP: etcd drops the connection ("first record does not look like a TLS handshake")
    with pytest.raises(ConnectionError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{plain}/health", timeout=5)

    # the CA alone is not enough: client certificates are required
    assert m.tls is not None
    no_cert = ssl.create_default_context(cafile=str(m.tls.ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=no_cert))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        opener.open(f"{m.client_url}/health", timeout=5).read()


def test_cluster_has_one_leader_and_equal_hashkv(etcd_cluster3: EtcdCluster) -> None:
    c = etcd_cluster3
    statuses = c.statuses()
    assert sorted(statuses) == ["m1", "m2", "m3"]
    assert len({s["leader"] for s in statuses.values()}) == 1
    assert len({s["header"]["member_id"] for s in statuses.values()}) == 3
    leader = c.leader()
    assert int(statuses[leader.name]["header"]["member_id"]) == int(statuses[leader.name]["leader"])

    follower = next(m for m in c.members if m is not leader)
    keys = load_data(follower, 600_000, value_size=(1_000, 20_000), threads=4, prefix="/harness/bulk/")
    c.etcdctl("put", "/harness/last", "x")
    rev = leader.revision()
    wait_until(lambda: all(m.revision() >= rev for m in c.members), 10, what="all members at revision")
    hashes = c.hashkvs(rev)
    assert len(set(hashes.values())) == 1, hashes
    for m in c.members:
        counted = json.loads(m.etcdctl("get", "/harness/bulk/", "--prefix", "--keys-only", "-w", "json").stdout)
        assert counted["count"] == keys


def test_load_data_writes_the_values_it_promises(etcd_member_tls: EtcdMember) -> None:
    m = etcd_member_tls  # python-etcd3 over TLS with the client certificate
    keys = load_data(m, 2_000_000, value_size=(5_000, 50_000), prefix="/harness/v/", seed=3)
    out = json.loads(m.etcdctl("get", "/harness/v/", "--prefix", "-w", "json").stdout)
    assert out["count"] == keys
    total = 0
    for kv in out["kvs"]:
        key = base64.b64decode(kv["key"]).decode()
        value = base64.b64decode(kv["value"])
        index = int(key.rsplit("/", 1)[1])
        assert value == value_for(index, len(value), seed=3), key
        total += len(value)
    assert total >= 2_000_000
    one_per_key = load_data(m, 100_000, value_size=(10_000, 10_000), prefix="/harness/w/", batch_bytes=0)
    assert one_per_key == 10


def test_member_restarts_from_its_command_with_its_data(etcd_member: EtcdMember) -> None:
    m = etcd_member
    m.put("/harness/keep", "kept")
    rev = m.revision()
    m.stop()  # SIGTERM: a clean shutdown
    assert not m.is_running()
    assert m.exited_code() is not None

    # what the agent's process runtime does with start_command: run it detached, as-is
    foreign = subprocess.Popen(m.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        m.wait_healthy(timeout=30)
        assert m.pids() == [foreign.pid]
        assert m.get("/harness/keep") == "kept"
        assert m.revision() == rev
        m.stop(kill=True)  # stops the foreign process too: it serves this data dir
        assert foreign.wait(timeout=10) == -9
        assert not m.is_running()
    finally:
        if foreign.poll() is None:
            foreign.kill()
            foreign.wait()

    m.start()
    m.wait_healthy()
    assert m.get("/harness/keep") == "kept"


def test_cluster_member_restart_catches_up(etcd_cluster3: EtcdCluster) -> None:
    c = etcd_cluster3
    down = c.leader()  # the hard case: the two others must elect a new leader
    started = time.monotonic()
    down.stop(kill=True)
    assert time.monotonic() - started < 5
    assert not down.is_running()
    others = [m for m in c.members if m is not down]
    # a write sent before the others elected a new leader can hang until etcd's request timeout
    c.wait_healthy(timeout=30, members=others)
    assert c.leader() in others
    c.etcdctl("put", "/harness/while-down", "1")
    down.start()
    c.wait_healthy(timeout=30)
    assert down.get("/harness/while-down") == "1"
    rev = c.members[0].revision()
    wait_until(lambda: down.revision() >= rev, 10, what=f"{down.name} to catch up to revision {rev}")
    assert len(set(c.hashkvs(rev).values())) == 1


def test_etcd_environment_is_clean(etcd_member: EtcdMember, monkeypatch: pytest.MonkeyPatch) -> None:
    # ETCD_*/ETCDCTL_* variables of the caller must not reach etcd or etcdctl (they act as flags)
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", "http://127.0.0.1:1")
    monkeypatch.setenv("ETCD_NAME", "wrong")
    etcd_member.stop(kill=True)
    etcd_member.start()
    etcd_member.wait_healthy()
    etcd_member.put("/harness/env", "ok")
    assert etcd_member.get("/harness/env") == "ok"
    with open(f"/proc/{etcd_member.pid}/environ", "rb") as fh:
        env_of_etcd = fh.read().split(b"\0")
    assert not [e for e in env_of_etcd if e.startswith((b"ETCD_", b"ETCDCTL_"))]
    members = json.loads(etcd_member.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert [x["name"] for x in members] == [etcd_member.name]


def test_launch_moves_to_new_ports_when_one_is_taken(etcd_factory: EtcdFactory) -> None:
    build = build_for("3.4") or build_for("3.5")  # build-independent harness logic: one build is enough
    if build is None:
        pytest.skip(missing_build_reason("3.4"))
    # bound but not listening: etcd's bind fails, while peers probing the port are refused at once
    with socket.socket() as squatter, socket.socket() as squatter2:
        squatter.bind(("127.0.0.1", 0))
        taken = squatter.getsockname()[1]
        m = etcd_factory.member(build, client_port=taken)  # launch() retries on fresh ports
        assert m.client_port != taken
        assert "address already in use" in m.log_path.read_text()
        m.put("/harness/moved", "yes")
        assert m.get("/harness/moved") == "yes"

        squatter2.bind(("127.0.0.1", 0))
        taken2 = squatter2.getsockname()[1]
        c = etcd_factory.cluster(build, size=3, start=False)
        c.members[1].peer_port = taken2
        c._assign("retry")
        c.launch()
        assert c.members[1].peer_port != taken2
        assert c.members[1].peer_url in c.members[0].initial_cluster
        assert "address already in use" in c.members[1].log_path.read_text()
        assert c.leader() in c.members
