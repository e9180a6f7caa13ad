"""The control channel end to end: a real agent daemon (subprocess) with its CURVE server in
front of a real etcd member, and the coordinator's AgentClient, over 127.0.0.1.

The first tests are pure (no processes): the transfer digest, the log throttle and
the small helpers the server is built from.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
import zmq
import zstandard
from etcdguard.agent.control.auth import Throttle, ZapLog
from etcdguard.agent.control.handlers import fit_list
from etcdguard.agent.control.transfer import NotFound
from etcdguard.agent.control.workers import error_code
from etcdguard.common.base.errors import EXIT_UNSAFE, ConfigError, SnapshotCorrupt, UnsafeRefusal, UsageError
from etcdguard.common.snapshot.integrity import KnownSizeDigest, TrailerHasher
from etcdguard.common.snapshot.sink import HashingSink
from etcdguard.common.wire import protocol as P
from etcdguard.coordinator.agents.client import AgentClient, AgentUnreachable

from tests.helpers.agentconf import AGENT, render_toml
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.etcd import clean_env, load_data
from tests.helpers.net import free_server_port, wait_until
from tests.helpers.proxy import SlowProxy

MiB = 1 << 20


# ---------------------------------------------------------------------------
# pure pieces


def fake_snapshot(rng: random.Random, body_size: int) -> bytes:
    body = rng.randbytes(body_size)
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("body_size", [0, 1, 31, 32, 33, 1000, MiB + 7])
def test_known_size_digest_agrees_with_trailer_hasher(body_size):
    rng = random.Random(body_size)
    data = fake_snapshot(rng, body_size)
    for _ in range(5):
        digest, reference = KnownSizeDigest(len(data)), TrailerHasher()
        pos = 0
        while pos < len(data):   # random chunking, including chunks smaller than the trailer
            n = rng.choice([1, 5, 31, 32, 33, 4096, len(data)])
            digest.update(data[pos:pos + n])
            reference.update(data[pos:pos + n])
            pos += n
        sha, ok = digest.finish()
        assert sha == reference.sha256 == hashlib.sha256(data).hexdigest()
        # a bare 32-byte "trailer" with no body is not a snapshot (TrailerHasher.check says the same)
        assert ok == (body_size > 0) and reference.trailer_ok()


def test_known_size_digest_spots_damage_and_overflow():
    data = bytearray(fake_snapshot(random.Random(1), 5000))
    data[100] ^= 1
    digest = KnownSizeDigest(len(data))
    digest.update(bytes(data))
    assert digest.finish()[1] is False
    digest = KnownSizeDigest(10)
    with pytest.raises(ValueError, match="more than the declared"):
        digest.update(b"x" * 11)
    digest = KnownSizeDigest(10)
    digest.update(b"x" * 5)
    with pytest.raises(ValueError, match="finished after 5 of 10"):
        digest.finish()


@pytest.mark.parametrize("batch_bytes", [1, MiB])
def test_file_sink_writes_and_hashes_in_order(tmp_path, batch_bytes):
    data = fake_snapshot(random.Random(7), 3 * MiB)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        digest = KnownSizeDigest(len(data))
        with HashingSink(fd, digest, batch_bytes=batch_bytes, depth=2, writeback=MiB) as sink:
            for pos in range(0, len(data), 300_000):
                sink.write(memoryview(data[pos:pos + 300_000]))
        sha, ok = digest.finish()
    finally:
        os.close(fd)
    assert (sha, ok) == (hashlib.sha256(data).hexdigest(), True)
    assert (tmp_path / "out").read_bytes() == data


def test_throttle_counts_what_it_held_back():
    t = Throttle(interval=10.0)
    assert t.allow("k", now=100.0) == 0
    assert t.allow("k", now=101.0) is None
    assert t.allow("k", now=102.0) is None
    assert t.allow("other", now=102.0) == 0
    assert t.allow("k", now=111.0) == 2
    small = Throttle(interval=10.0, limit=2)
    for i in range(5):
        assert small.allow(f"k{i}", now=100.0 + 20 * i) == 0
    assert len(small._seen) <= 2


def test_zap_log_turns_refusals_into_warnings(caplog, tmp_path):
    zap = ZapLog(tmp_path, Throttle())
    key = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    with caplog.at_level("DEBUG", logger="etcdguard.agent.control.auth"):
        zap.debug("%s (CURVE) domain=%s client_key=%s", "DENIED", "*", key)
        zap.debug("%s (CURVE) domain=%s client_key=%s", "DENIED", "*", key)   # throttled
        zap.debug("ALLOWED (CURVE) domain=%s client_key=%s", "*", b"x")
        zap.error("Failed to load CURVE certs from %s: %s", tmp_path, "boom")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and key.decode() in warnings[0].getMessage()
    assert zap.refusals == 2
    assert any(r.levelname == "ERROR" and "boom" in r.getMessage() for r in caplog.records)


def test_key_ring_reloads_only_on_a_change(tmp_path):
    """No "reloaded" at start: the set read at construction is the one the first check compares with."""
    from etcdguard.agent.config import ServerSettings
    from etcdguard.agent.control.auth import KeyRing
    from etcdguard.common.wire import keys as wire_keys

    _, secret = wire_keys.generate("agent", tmp_path / "keys")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    first, _ = wire_keys.generate("c1", tmp_path / "c1")
    shutil.copy(first, authorized / first.name)
    ring = KeyRing(ServerSettings(secret_key=secret, authorized_keys=authorized), "agent.toml")
    c1 = wire_keys.load_public(first).decode()
    assert ring.admits(c1) and not ring.admits(None) and not ring.admits("x" * 40)
    ctx = zmq.Context()
    try:
        ring.start(ctx)
        assert ring.reload_if_changed() is False
        (authorized / first.name).unlink()
        assert ring.reload_if_changed() is True
        assert not ring.admits(c1)
        assert ring.reload_if_changed() is False
    finally:
        ring.stop()
        ctx.term()
    insecure = KeyRing(ServerSettings(insecure=True), "agent.toml")
    assert insecure.admits(None) and insecure.reload_if_changed() is False


def test_every_wire_op_has_one_lane():
    from etcdguard.agent.control.handlers import OPS, Lane

    assert set(OPS) == set(P.OPS)
    lanes = {name: op.lane for name, op in OPS.items()}
    assert lanes["snapshot.take"] is Lane.LONG and lanes["restore.step"] is Lane.LONG
    assert lanes["status"] is Lane.STATUS and lanes["snapshot.put"] is Lane.STAGING
    # the ops whose replies carry data are exactly the ones counted in a peer's fetch window
    assert {name for name, op in OPS.items() if op.data} == {n for n, spec in P.OPS.items() if spec.reply_data}


def test_error_codes_and_fit_list():
    assert error_code(P.ProtocolError(P.CONFLICT, "x")) == P.CONFLICT
    assert error_code(NotFound("x")) == P.NOT_FOUND
    assert error_code(UsageError("x")) == P.BAD_REQUEST
    assert error_code(UnsafeRefusal("x")) == P.UNSAFE
    assert error_code(SnapshotCorrupt("x")) == P.FAILED
    assert error_code(ConfigError("x")) == P.FAILED
    items = [{"n": "x" * 100}] * 50
    fitted, cut = fit_list(items, budget=1000)
    assert cut and 0 < len(fitted) < 10
    assert fit_list(items[:3], budget=1000) == (items[:3], False)


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture
def ckeys(tmp_path) -> CoordinatorKeys:
    return CoordinatorKeys.create(tmp_path / "coordinator-keys")


@pytest.fixture
def agents():
    """Agents a test starts; all are stopped at the end, also when the test fails."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.running():
            agent.stop()
    for agent in started:
        if os.environ.get("ETCDGUARD_TEST_SHOW_AGENT_LOG"):
            print(f"\n[agent {agent.member.name}]\n{agent.log_tail(80)}")


def run_agent(agents: list[AgentProcess], agent: AgentProcess) -> AgentProcess:
    agents.append(agent)
    agent.start()
    return agent


def listing(*dirs: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory below ``dirs`` with (mode, size, mtime_ns)."""
    out = {}
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            for name in subdirs + files:
                st = os.lstat(os.path.join(root, name))
                out[os.path.join(root, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------
# authentication and status


def test_status_over_curve_and_unknown_keys_refused(etcd_member, tmp_path, ckeys, agents):
    for i in range(5):
        etcd_member.put(f"/status/{i}", "v")
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    with agent.client(ckeys) as client:
        st = client.status()
        assert st["member"]["name"] == etcd_member.name
        assert st["member"]["peer_url"] == etcd_member.peer_url
        assert st["member"]["data_dir"] == str(etcd_member.data_dir)
        assert st["member"]["runtime"] == "process"
        assert st["member"]["endpoints"] == [etcd_member.client_url]
        etcd = st["etcd"]
        assert etcd["revision"] == etcd_member.revision()
        assert etcd["healthy"] is True and etcd["error"] is None
        assert etcd["version"] == etcd_member.build.version
        assert etcd["member_id"] == f"{etcd_member.member_id():x}"
        assert etcd["is_leader"] is True and etcd["leader"] == etcd["member_id"]
        assert etcd["db_size"] > 0
        # measured for this reply, the raft request answered (quorum); etcd >= 3.4 reports these too
        assert etcd["quorum"] is True and etcd["stale"] is False and 0 <= etcd["age"] < 1.0
        assert etcd["measured_at"].endswith("Z") and etcd["measured_at"][:4].isdigit()
        assert etcd["raft_applied_index"] > 0 and 0 < etcd["db_size_in_use"] <= etcd["db_size"]
        assert st["restore_tool"]["path"] == str(etcd_member.build.restore_tool)
        assert st["restore_tool"]["version"] == etcd_member.build.version
        assert st["disk"]["data_dir_free"] > 0 and st["disk"]["store_free"] > 0 and st["disk"]["staging_free"] > 0
        assert [s["name"] for s in st["snapshots"]] == [agent.seeded.name]
        assert st["snapshots"][0]["sha256"] == agent.seeded.sha256
        assert st["restore"] == {"locked": False, "last_op": None, "last_state": None, "open_ops": []}
        assert st["agent"]["busy"] is None
        assert client.call("ping") == {"pong": True, "version": st["agent"]["version"]}
        assert [s["name"] for s in client.call("snapshot.list")["snapshots"]] == [agent.seeded.name]
        # a write moves the revision the agent reports
        etcd_member.put("/status/more", "v")
        assert client.status()["etcd"]["revision"] == etcd_member.revision()

        # A coordinator key that is not in authorized_keys gets nothing at all, and the agent says so.
        stranger = CoordinatorKeys.create(tmp_path / "stranger-keys", "stranger")
        with agent.client(stranger) as bad:
            started = time.monotonic()
            with pytest.raises(AgentUnreachable, match=r"did not answer status within 1\.5s"):
                bad.status(timeout=1.5)
            assert time.monotonic() - started < 5
        wait_until(lambda: f"CURVE key {stranger.public.decode()} is not in authorized_keys" in agent.log_text(),
                   10, what="the refusal in the agent's log")
        # A client that expects another agent key (an impostor's server) gets nothing either.
        impostor, _ = zmq.curve_keypair()
        with AgentClient("m1", agent.endpoint, server_public_key=impostor, client_public=ckeys.public,
                         client_secret=ckeys.secret) as wrong, pytest.raises(AgentUnreachable):
            wrong.call("ping", timeout=1.0)
        # The authorized coordinator is unaffected, and a key added to the directory is admitted
        # without a restart.
        assert client.call("ping")["pong"] is True
        agent.authorize(stranger.public_path)
        with agent.client(stranger) as now_known:
            assert wait_until(lambda: now_known.call("ping", timeout=1.0), 15, interval=0.2,
                              what="the new key to be admitted")["pong"] is True
        assert "authorized keys reloaded" in agent.log_text()
    assert agent.stop() == 0


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_revoked_key_is_refused_on_its_next_request(etcd_member, tmp_path, ckeys, agents):
    """Removing a coordinator's key from authorized_keys (no SIGHUP) ends the session it already has."""
    other = CoordinatorKeys.create(tmp_path / "other-keys", "other")
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent",
                                           authorized=[ckeys.public_path, other.public_path]))
    with agent.client(ckeys) as client, agent.client(other) as bystander:
        assert client.status()["member"]["name"] == etcd_member.name
        assert bystander.call("ping")["pong"] is True
        assert client.reconnects == 0
        (agent.authorized_dir / ckeys.public_path.name).unlink()

        def refused() -> bool:
            try:
                client.call("ping", timeout=1.0, retries=0)
            except AgentUnreachable:
                return True
            assert client.reconnects == 0   # answered on the connection made before the revocation
            return False

        wait_until(refused, 20, interval=0.2, what="the revoked key to be refused")
        # the request that went unanswered was sent on the session opened while the key was valid
        assert client.reconnects == 1
        wait_until(lambda: "is no longer in authorized_keys" in agent.log_text(), 10,
                   what="the refusal of the revoked session in the agent's log")
        for op in ("status", "snapshot.list", "snapshot.take"):
            with pytest.raises(AgentUnreachable):
                client.call(op, timeout=1.0, retries=0)
        assert [m.name for m in agent.store().list()] == [agent.seeded.name]   # snapshot.take never ran
        assert bystander.call("ping")["pong"] is True                          # the other key is unaffected
        log = agent.log_text()
        assert f"revoked key {ckeys.public.decode()[:8]}..." in log
        # one reload line: the revocation (none at start, when nothing had changed)
        assert log.count("authorized keys reloaded") == 1, log
        # put back, it is admitted again without a restart
        agent.authorize(ckeys.public_path)
        assert wait_until(lambda: client.call("ping", timeout=1.0, retries=0), 20, interval=0.2,
                          what="the key to be admitted again")["pong"] is True
    assert agent.stop() == 0


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_insecure_agent_serves_plain_tcp_and_warns(etcd_member, tmp_path, agents):
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", insecure=True, write_keys=False))
    with agent.client(None) as client:
        assert client.status()["member"]["name"] == etcd_member.name
    assert "WARNING server.insecure = true" in agent.log_text()
    # a CURVE client cannot talk to a plain-TCP agent
    ck = CoordinatorKeys.create(tmp_path / "ck")
    server_key, _ = zmq.curve_keypair()
    with AgentClient("m1", agent.endpoint, server_public_key=server_key, client_public=ck.public,
                     client_secret=ck.secret) as curve_client, pytest.raises(AgentUnreachable):
        curve_client.call("ping", timeout=1.0)


def agent_config(tmp_path: Path, **server) -> Path:
    sections = {
        "etcd": {"name": "m1", "data_dir": str(tmp_path / "data"), "endpoints": ["http://127.0.0.1:9"],
                 "peer_url": "http://127.0.0.1:10"},
        "backup": {"dir": str(tmp_path / "snapshots")},
        "server": {"listen": f"tcp://127.0.0.1:{free_server_port()}", **server},
        "metrics": {"enabled": False},
        "state": {"dir": str(tmp_path / "state")},
    }
    path = tmp_path / "agent.toml"
    path.write_text(render_toml(sections))
    return path


def run_agent_cli(config: Path) -> tuple[int, str]:
    import subprocess

    proc = subprocess.run([*AGENT, "--config", str(config), "run"], capture_output=True, text=True, timeout=60,
                          env=clean_env(), check=False)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", ["no-secret", "secret-unset", "public-as-secret", "world-readable",
                                  "no-authorized-dir", "bad-authorized-key", "port-taken"])
def test_refuses_to_start_without_usable_keys(tmp_path, case):
    kdir = tmp_path / "keys"
    from etcdguard.common.wire import keys

    public, secret = keys.generate("agent", kdir)
    authorized = kdir / "authorized"
    authorized.mkdir()
    server: dict[str, object] = {"secret_key": str(secret), "authorized_keys": str(authorized)}
    expect = "server.secret_key"
    if case == "no-secret":
        server["secret_key"] = str(kdir / "missing.key_secret")
        expect = f"server.secret_key {kdir / 'missing.key_secret'}: no such file"
    elif case == "secret-unset":
        del server["secret_key"]   # the default, /etc/etcdguard/keys/agent.key_secret, is not there
        expect = "server.secret_key /etc/etcdguard/keys/agent.key_secret: no such file"
    elif case == "public-as-secret":
        server["secret_key"] = str(public)
        expect = "no secret-key line"
    elif case == "world-readable":
        os.chmod(secret, 0o644)
        expect = "readable by other users"
    elif case == "no-authorized-dir":
        server["authorized_keys"] = str(tmp_path / "nope")
        expect = f"server.authorized_keys {tmp_path / 'nope'}: no such directory"
    elif case == "bad-authorized-key":
        (authorized / "broken.key").write_text("public-key = \"tooshort\"\n")
        expect = "broken.key: public-key is not a 40-character Z85 key"
    if case == "port-taken":
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            server["listen"] = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
            expect = f"server.listen {server['listen']}: cannot listen: Address already in use"
            code, stderr = run_agent_cli(agent_config(tmp_path, **server))
    else:
        code, stderr = run_agent_cli(agent_config(tmp_path, **server))
    assert code == 2, stderr
    assert expect in stderr, stderr
    assert "Traceback" not in stderr


# ---------------------------------------------------------------------------
# transfers


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_fetch_over_curve_and_agent_killed_mid_transfer(etcd_member, tmp_path, ckeys, agents):
    load_data(etcd_member, 40_000_000, threads=4)
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    meta = agent.seeded
    assert meta.size > 40_000_000
    vault = tmp_path / "vault"
    vault.mkdir()
    seen: list[tuple[int, int]] = []
    with agent.client(ckeys) as client:
        client.fetch_snapshot(meta.name, vault / "a.db", expected_sha256=meta.sha256, expected_size=meta.size,
                              progress=lambda done, total: seen.append((done, total)))
        data = (vault / "a.db").read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta.sha256
        assert data == Path(meta.path).read_bytes()
        assert stat.S_IMODE((vault / "a.db").stat().st_mode) == 0o600
        assert seen[-1] == (meta.size, meta.size) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert sorted(p.name for p in vault.iterdir()) == ["a.db"]

        # Expectations that do not match the agent's file: refused, nothing written.
        with pytest.raises(SnapshotCorrupt, match="sha256"):
            client.fetch_snapshot(meta.name, vault / "b.db", expected_sha256="0" * 64, expected_size=meta.size)
        with pytest.raises(SnapshotCorrupt, match="bytes, expected"):
            client.fetch_snapshot(meta.name, vault / "b.db", expected_sha256=meta.sha256, expected_size=meta.size + 1)
        with pytest.raises(P.RemoteError) as info:
            client.fetch_snapshot("snap-nope.db", vault / "b.db", expected_sha256=meta.sha256, expected_size=10)
        assert info.value.code == P.NOT_FOUND
        assert sorted(p.name for p in vault.iterdir()) == ["a.db"]

        # The agent dies mid-transfer: the fetch fails after its deadline, leaving nothing behind.
        killed = []

        def kill_midway(done: int, total: int) -> None:
            if done >= 8 * MiB and not killed:
                agent.kill()
                killed.append(done)

        started = time.monotonic()
        with pytest.raises(AgentUnreachable, match="no data for 3s"):
            client.fetch_snapshot(meta.name, vault / "b.db", expected_sha256=meta.sha256, expected_size=meta.size,
                                  progress=kill_midway, timeout=3.0)
        assert killed and killed[0] < meta.size
        assert time.monotonic() - started < 15
        assert sorted(p.name for p in vault.iterdir()) == ["a.db"]

        # Once the agent is back, the same client fetches the file again.
        agent.start()
        client.fetch_snapshot(meta.name, vault / "b.db", expected_sha256=meta.sha256, expected_size=meta.size,
                              chunk=256 * 1024, credit=8)
        assert hashlib.sha256((vault / "b.db").read_bytes()).hexdigest() == meta.sha256
        assert sorted(p.name for p in vault.iterdir()) == ["a.db", "b.db"]
        assert client.reconnects >= 1


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_compressed_fetch_writes_frames_of_the_snapshot_and_resumes_after_the_agent_restarts(
        etcd_member, tmp_path, ckeys, agents):
    """The agent compresses every chunk it sends (off its socket loop); the file written is zstd frames that
    decompress to the agent's snapshot, checked by its sha256 as they arrive; cut mid-transfer, the fetch
    resumes at the last contiguous byte on a restarted agent."""
    load_data(etcd_member, 24_000_000, threads=4)
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    meta = agent.seeded
    original = Path(meta.path).read_bytes()
    vault = tmp_path / "vault"
    vault.mkdir()
    with agent.client(ckeys) as client:
        assert client.fetch_snapshot(meta.name, vault / "a.zst", expected_sha256=meta.sha256,
                                     expected_size=meta.size, zstd_level=3) == "zstd"
        packed = io.BytesIO((vault / "a.zst").read_bytes())
        assert zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True).read() == original
        with pytest.raises(SnapshotCorrupt, match="sha256"):
            client.fetch_snapshot(meta.name, vault / "b.zst", expected_sha256="0" * 64, expected_size=meta.size,
                                  zstd_level=1)
        with pytest.raises(P.RemoteError) as info:
            client.fetch_snapshot("snap-nope.db", vault / "b.zst", expected_sha256=meta.sha256, expected_size=10,
                                  zstd_level=1)
        assert info.value.code == P.NOT_FOUND
        killed: list[int] = []

        def kill_midway(done: int, total: int) -> None:
            if done >= 6 * MiB and not killed:
                agent.kill()
                killed.append(done)

        with pytest.raises(AgentUnreachable):
            client.fetch_snapshot(meta.name, vault / "b.zst", expected_sha256=meta.sha256, expected_size=meta.size,
                                  progress=kill_midway, timeout=3.0, zstd_level=1)
        assert sorted(p.name for p in vault.iterdir()) == ["a.zst"]
        agent.start()
        client.fetch_snapshot(meta.name, vault / "b.zst", expected_sha256=meta.sha256, expected_size=meta.size,
                              chunk=256 * 1024, credit=8, zstd_level=1)
        again = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((vault / "b.zst").read_bytes()),
                                                           read_across_frames=True).read()
        assert again == original


def put_chunks(client: AgentClient, upload: str, data: bytes, sha: str, chunk: int = 64 * 1024) -> dict:
    result: dict = {}
    for pos in range(0, len(data), chunk):
        piece = data[pos:pos + chunk]
        result = client.call("snapshot.put", {"upload": upload, "offset": pos, "total_size": len(data),
                                              "sha256": sha, "final": pos + len(piece) == len(data)}, data=piece)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_put_round_trip_and_rejections(etcd_member, tmp_path, ckeys, agents):
    load_data(etcd_member, 300_000, value_size=(500, 2000), threads=2)
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    src = tmp_path / "local.db"
    shutil.copyfile(agent.seeded.path, src)
    data = src.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    staging = agent.staging_dir
    with agent.client(ckeys) as client:
        progress: list[int] = []
        result = client.put_snapshot(src, "up-1", chunk=16 * 1024, credit=3, progress=lambda d, t: progress.append(d))
        assert result == {"upload": "up-1", "received": len(data), "complete": True, "staged": "up-1.db"}
        assert progress[-1] == len(data)
        staged = staging / "up-1.db"
        assert staged.read_bytes() == data
        assert stat.S_IMODE(staged.stat().st_mode) == 0o600
        assert stat.S_IMODE(staging.stat().st_mode) == 0o700
        assert sorted(p.name for p in staging.iterdir()) == ["up-1.db", "up-1.db.json"]
        # again: already staged, answered at once
        assert client.put_snapshot(src, "up-1")["staged"] == "up-1.db"
        # the staged upload can be fetched back, verified end to end
        client.fetch_snapshot("up-1.db", tmp_path / "back.db", expected_sha256=sha, expected_size=len(data))
        assert (tmp_path / "back.db").read_bytes() == data

        def rejected(upload: str, payload: bytes, declared: str, code: str, words: str) -> None:
            with pytest.raises(P.RemoteError) as info:
                put_chunks(client, upload, payload, declared)
            assert info.value.code == code, info.value
            assert words in info.value.message, info.value.message
            assert not (staging / f"{upload}.partial").exists()
            assert not (staging / f"{upload}.db").exists()

        # a wrong sha256 declared: refused at the end, the partial removed
        rejected("up-2", data, "0" * 64, P.FAILED, "the sender declared")
        # one corrupted chunk (sha256 of the good file declared): refused, partial removed
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0xFF
        rejected("up-3", bytes(bad), sha, P.FAILED, "sha256 of the received")
        # consistent sha256 of bad data: the etcd trailer catches it
        rejected("up-4", bytes(bad), hashlib.sha256(bad).hexdigest(), P.FAILED, "trailer does not match")
        # a gap in the offsets
        with pytest.raises(P.RemoteError) as info:
            client.call("snapshot.put", {"upload": "up-5", "offset": 0, "total_size": len(data), "sha256": sha,
                                         "final": False}, data=data[:1000])
            client.call("snapshot.put", {"upload": "up-5", "offset": 2000, "total_size": len(data), "sha256": sha,
                                         "final": False}, data=data[2000:3000])
        assert info.value.code == P.BAD_REQUEST and "leaves a gap; 1000 bytes received" in info.value.message
        # a resent (overlapping) chunk is acknowledged and only its new part written
        r = client.call("snapshot.put", {"upload": "up-5", "offset": 500, "total_size": len(data), "sha256": sha,
                                         "final": False}, data=data[500:1500])
        assert r["received"] == 1500
        # the same upload id with another size: conflict
        with pytest.raises(P.RemoteError) as info:
            client.call("snapshot.put", {"upload": "up-5", "offset": 1500, "total_size": len(data) + 1,
                                         "sha256": sha, "final": False}, data=b"x")
        assert info.value.code == P.CONFLICT
        assert client.call("snapshot.put.abort", {"upload": "up-5"}) == {"removed": True}
        assert client.call("snapshot.put.abort", {"upload": "up-5"}) == {"removed": False}
        # not enough disk for twice the declared size: refused before anything is written
        with pytest.raises(P.RemoteError) as info:
            client.call("snapshot.put", {"upload": "huge", "offset": 0, "total_size": 1 << 49, "sha256": sha,
                                         "final": False}, data=b"")
        assert info.value.code == P.UNSAFE and info.value.exit_code == EXIT_UNSAFE
        # a local file that is not a snapshot is never sent
        (tmp_path / "junk.db").write_bytes(b"not a snapshot" * 100)
        with pytest.raises(SnapshotCorrupt, match="refusing to upload"):
            client.put_snapshot(tmp_path / "junk.db", "junk")
        assert sorted(p.name for p in staging.iterdir()) == ["up-1.db", "up-1.db.json"]
        # abort of a staged upload removes it; it can no longer be fetched
        assert client.call("snapshot.put.abort", {"upload": "up-1"}) == {"removed": True}
        assert list(staging.iterdir()) == []
        with pytest.raises(P.RemoteError) as info:
            client.fetch_snapshot("up-1.db", tmp_path / "gone.db", expected_sha256=sha, expected_size=len(data))
        assert info.value.code == P.NOT_FOUND


# ---------------------------------------------------------------------------
# robustness


def _templates(snapshot: str) -> list[list[bytes]]:
    reqs = [
        P.encode_request("ping", {}),
        P.encode_request("status", {}),
        P.encode_request("snapshot.list", {}),
        P.encode_request("snapshot.fetch", {"name": snapshot, "offset": 0, "size": 4096}),
        P.encode_request("snapshot.fetch", {"name": snapshot, "offset": 1 << 40, "size": 10}),
        P.encode_request("snapshot.fetch", {"name": "snap-x.db.json", "offset": 0, "size": 10}),
        [b'{"v":1,"id":"t","op":"snapshot.fetch","args":{"name":"../../etc/passwd","offset":0,"size":10}}'],
        P.encode_request("restore.status", {"op_id": "nope"}),
        # requests that would change something, sent broken
        [b'{"v":1,"id":"a","op":"snapshot.take","args":{"x":1}}'],
        [b'{"v":1,"id":"b","op":"snapshot.put","args":{"upload":"u","offset":0,"total_size":1,'
         b'"sha256":"' + b"0" * 64 + b'","final":true}}'],
        [b'{"v":1,"id":"c","op":"restore.step","args":{"op_id":"o","step":"swap","params":{"a":1}}}'],
        [b'{"v":1,"id":"d","op":"snapshot.put.abort","args":{"upload":".."}}'],
    ]
    return [list(r) for r in reqs]


def _mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = [bytearray(f) for f in frames]
    kind = rng.randrange(9)
    f = rng.randrange(len(frames))
    buf = frames[f]
    if kind == 0 and buf:                    # flip bits
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1 and buf:                  # truncate
        del buf[rng.randrange(len(buf)):]
    elif kind == 2:                          # insert junk
        pos = rng.randint(0, len(buf))
        buf[pos:pos] = rng.randbytes(rng.randint(1, 20))
    elif kind == 3:                          # replace a JSON token with something else
        text = bytes(buf)
        for old, new in ((b"1", b"1e999"), (b'"', b"'"), (b"{", b"[" * 40), (b"0", b"-0.0"), (b"true", b"1")):
            if old in text and rng.random() < 0.5:
                text = text.replace(old, new, 1)
        frames[f] = bytearray(text)
    elif kind == 4:                          # extra frames
        frames += [bytearray(rng.randbytes(rng.randint(0, 64))) for _ in range(rng.randint(1, 3))]
    elif kind == 5:                          # random bytes only
        frames = [bytearray(rng.randbytes(rng.randint(0, 200)))]
    elif kind == 6:                          # an empty frame
        frames = [bytearray()]
    elif kind == 7:                          # a big header
        frames[0] = bytearray(b'{"v":1,"id":"big","op":"ping","args":{"pad":"' + b"x" * (P.MAX_HEADER + 10) + b'"}}')
    else:                                    # a data frame on an op that takes none
        frames.append(bytearray(rng.randbytes(rng.randint(0, 5000))))
    return [bytes(f) for f in frames]


def _changes_state(frames: list[bytes]) -> bool:
    try:
        req = P.decode_request(frames)
    except P.ProtocolError:
        return False
    return req.op in ("snapshot.take", "snapshot.put", "snapshot.put.abort", "restore.step")


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_fuzzed_frames_from_an_authorized_peer(etcd_member, tmp_path, ckeys, agents):
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    watched = (agent.store_dir, agent.state_dir)
    before = listing(*watched)
    assert any(p.endswith(".db") for p in before)
    rng = random.Random(20261124)
    templates = _templates(agent.seeded.name)
    ctx = zmq.Context()
    fuzzer = ctx.socket(zmq.DEALER)
    fuzzer.linger = 0
    fuzzer.curve_serverkey = agent.public_key
    fuzzer.curve_publickey, fuzzer.curve_secretkey = ckeys.public, ckeys.secret
    fuzzer.connect(agent.endpoint)
    sent = replies = 0
    codes: dict[str, int] = {}

    def drain(wait_ms: int) -> None:
        nonlocal replies
        while fuzzer.poll(wait_ms, zmq.POLLIN):
            frames = fuzzer.recv_multipart()
            reply = P.decode_reply(frames)   # every reply is itself valid protocol
            replies += 1
            key = "ok" if reply.ok else reply.error_code
            codes[key] = codes.get(key, 0) + 1
            wait_ms = 0

    deadline = time.monotonic() + 10.0
    with agent.client(ckeys) as client:
        try:
            while time.monotonic() < deadline and sent < 10_000:
                for _ in range(100):
                    frames = _mutate(rng, rng.choice(templates))
                    if rng.random() < 0.3:
                        frames = _mutate(rng, frames)
                    if _changes_state(frames):
                        continue
                    fuzzer.send_multipart(frames)
                    sent += 1
                drain(0)
                st = client.status(timeout=5.0)   # answers between bursts
                assert st["member"]["name"] == etcd_member.name
            wait_until(lambda: (drain(50), replies >= sent)[1], 20, what=f"replies to all {sent} messages")
        finally:
            fuzzer.close(0)
            ctx.term()
        assert sent >= 2000, sent
        assert replies == sent
        assert codes.get(P.BAD_REQUEST, 0) > sent // 3, codes
        assert client.status()["etcd"]["healthy"] is True
        # A frame beyond the size limit: the agent drops that connection, and serves everyone else.
        ctx = zmq.Context()
        big = ctx.socket(zmq.DEALER)
        big.linger = 0
        big.curve_serverkey = agent.public_key
        big.curve_publickey, big.curve_secretkey = ckeys.public, ckeys.secret
        big.connect(agent.endpoint)
        try:
            big.send_multipart([P.encode_request("ping", {})[0], b"x" * (P.MAX_CHUNK + P.MAX_HEADER + 8192)])
            assert not big.poll(1000, zmq.POLLIN)
        finally:
            big.close(0)
            ctx.term()
        assert client.status()["etcd"]["healthy"] is True
        assert [s["name"] for s in client.call("snapshot.list")["snapshots"]] == [agent.seeded.name]
    assert listing(*watched) == before
    assert "Traceback" not in agent.log_text()
    assert agent.running()


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_peer_that_never_reads_cannot_grow_the_agents_memory(etcd_member, tmp_path, ckeys, agents):
    """150 pipelined 4 MiB fetches from a peer that reads nothing: the agent holds at most its fetch window."""
    load_data(etcd_member, 6_000_000, threads=4)
    other = CoordinatorKeys.create(tmp_path / "other-keys", "other")
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent",
                                           authorized=[ckeys.public_path, other.public_path]))
    meta = agent.seeded
    assert meta.size > P.MAX_CHUNK
    with agent.client(ckeys) as client:   # warm up: the file is open, the buffers are there
        client.fetch_snapshot(meta.name, tmp_path / "warm.db", expected_sha256=meta.sha256, expected_size=meta.size)
    peak_before = agent.rss_kb("VmHWM")
    assert peak_before is not None
    ctx = zmq.Context()
    greedy = ctx.socket(zmq.DEALER)
    greedy.linger = 0
    greedy.rcvhwm = 1                       # its libzmq stops reading from the connection at once
    greedy.setsockopt(zmq.RCVBUF, 4096)
    greedy.curve_serverkey = agent.public_key
    greedy.curve_publickey, greedy.curve_secretkey = ckeys.public, ckeys.secret
    greedy.connect(agent.endpoint)
    requests = 150
    try:
        for i in range(requests):
            greedy.send_multipart(P.encode_request("snapshot.fetch", {"name": meta.name, "offset": 0,
                                                                      "size": P.MAX_CHUNK}, f"g-{i}"))
        greedy.send_multipart(P.encode_request("ping", {}, "g-last"))
        # the refusal in the log, or (without a bound) far more memory than the window
        wait_until(lambda: "refused snapshot.fetch from key" in agent.log_text()
                   or (agent.rss_kb() or 0) - peak_before > 300 * 1024, 30,
                   what="the agent to refuse fetches beyond the window")
        with agent.client(other) as bystander:   # everyone else is served meanwhile
            assert bystander.status(timeout=5.0)["member"]["name"] == etcd_member.name
        codes: dict[str, int] = {}
        last = None
        while last != "g-last":
            assert greedy.poll(30_000, zmq.POLLIN), f"replies stopped after {codes}"
            reply = P.decode_reply(greedy.recv_multipart())
            last = reply.id
            key = "ok" if reply.ok else reply.error_code
            codes[key] = codes.get(key, 0) + 1
    finally:
        greedy.close(0)
        ctx.term()
    peak_after = agent.rss_kb("VmHWM")
    assert peak_after is not None
    grown_mib = (peak_after - peak_before) / 1024
    # the window is 32 MiB; without it the agent held every reply (600 MiB here)
    assert grown_mib < 120, f"agent's peak RSS grew by {grown_mib:.0f} MiB"
    assert codes.get(P.BUSY, 0) > 0 and codes["ok"] < requests, codes
    assert codes["ok"] + codes[P.BUSY] == requests + 1, codes
    # the window is free again once the chunks are read: a full transfer with the same key works
    with agent.client(ckeys) as client:
        client.fetch_snapshot(meta.name, tmp_path / "after.db", expected_sha256=meta.sha256, expected_size=meta.size)
    assert (tmp_path / "after.db").read_bytes() == Path(meta.path).read_bytes()
    # and a client cannot be set to ask for more than the window
    with agent.client(ckeys) as client, pytest.raises(UsageError, match="fetch window"):
        client.fetch_snapshot(meta.name, tmp_path / "x.db", expected_sha256=meta.sha256, expected_size=meta.size,
                              credit=16, chunk=P.MAX_CHUNK)
    assert agent.running()


# ---------------------------------------------------------------------------
# long operations


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_long_snapshot_does_not_block_status(etcd_member, tmp_path, ckeys, agents):
    load_data(etcd_member, 6_000_000, threads=4)
    proxy = SlowProxy(etcd_member.client_port, 1_500_000)   # the snapshot stream crawls: ~4 s
    try:
        agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path],
                                               etcd_endpoint=f"http://127.0.0.1:{proxy.port}"))
        taken: dict = {}

        def take() -> None:
            with agent.client(ckeys) as c:
                try:
                    taken["result"] = c.call("snapshot.take", timeout=120)
                except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                    taken["error"] = exc

        worker = threading.Thread(target=take)
        worker.start()
        try:
            with agent.client(ckeys) as client, agent.client(ckeys) as other:
                wait_until(lambda: client.status()["agent"]["busy"] == "snapshot.take", 10,
                           what="the agent to report the running snapshot.take")
                for _ in range(5):
                    started = time.monotonic()
                    st = client.status(timeout=2.0)
                    assert time.monotonic() - started < 1.0
                    assert st["agent"]["busy"] == "snapshot.take"
                    assert client.call("ping", timeout=1.0)["pong"]
                with pytest.raises(P.RemoteError) as info:
                    other.call("snapshot.take", timeout=5)
                assert info.value.code == P.BUSY and info.value.exit_code == EXIT_UNSAFE
                assert "snapshot.take is running" in info.value.message
                # a fetch is served meanwhile
                meta = agent.seeded
                client.fetch_snapshot(meta.name, tmp_path / "during.db", expected_sha256=meta.sha256,
                                      expected_size=meta.size)
                assert worker.is_alive()
        finally:
            worker.join(120)
        assert "error" not in taken, taken
        snap = taken["result"]["snapshot"]
        assert snap["revision"] == etcd_member.revision()
        with agent.client(ckeys) as client:
            st = client.status()
            assert st["agent"]["busy"] is None
            assert [s["name"] for s in st["snapshots"]] == [snap["name"], agent.seeded.name]
        assert "snapshot.take requested by key " + ckeys.public.decode()[:8] in agent.log_text()
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_an_opening_step_resent_after_a_crash_before_its_earlier_steps_finishes_them_first(etcd_member, tmp_path,
                                                                                             ckeys, agents):
    # An agent killed between opening the operation and recording its preflight: the journal holds the
    # operation and nothing after. The coordinator resends prepare; the new agent must run preflight first.
    import json

    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    src = tmp_path / "snap.db"
    shutil.copyfile(agent.seeded.path, src)
    m = etcd_member
    params = {"snapshot": "up.db", "name": m.name, "initial_cluster": f"{m.name}={m.peer_url}",
              "token": "etcdguard-op9", "peer_url": m.peer_url, "bump_revision": 0}
    with agent.client(ckeys) as client:
        assert client.put_snapshot(src, "up")["staged"] == "up.db"
        first = client.call("restore.step", {"op_id": "op9", "step": "prepare", "params": params}, timeout=120)
    agent.stop()
    journal = agent.state_dir / "operations" / "op9" / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    opened = next(i for i, line in enumerate(lines) if json.loads(line).get("event") == "requested")
    journal.write_text("".join(lines[:opened + 1]))      # as the crash left it: opened, preflight not recorded
    for leftover in (m.data_dir / ".etcdguard-op9").glob("*"):
        shutil.rmtree(leftover)
    agent.start()
    with agent.client(ckeys) as client:
        again = client.call("restore.step", {"op_id": "op9", "step": "prepare", "params": params}, timeout=120)
        status = client.call("restore.status", {"op_id": "op9"})
    assert again["prepared"] == first["prepared"] and Path(again["prepared"]).is_dir()
    assert again["preflight"]["live_member"] is True
    assert sorted(status["steps"]) == ["preflight", "prepare"] and status["state"] == "running"


def test_restore_steps_are_recorded_and_deduplicated(etcd_member, tmp_path, ckeys, agents):
    etcd_member.put("/before", "1")
    agent = run_agent(agents, AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path]))
    src = tmp_path / "snap.db"
    shutil.copyfile(agent.seeded.path, src)
    m = etcd_member
    params = {"snapshot": "up.db", "name": m.name, "initial_cluster": f"{m.name}={m.peer_url}",
              "token": "etcdguard-op1", "peer_url": m.peer_url, "bump_revision": 0}
    with agent.client(ckeys) as client:
        assert client.put_snapshot(src, "up")["staged"] == "up.db"

        def step(name: str, **extra) -> dict:
            args = {"op_id": "op1", "step": name, **extra}
            return client.call("restore.step", args, timeout=120)

        pre = step("preflight")
        assert pre["recorded"] is False and pre["member"] == m.name
        with pytest.raises(P.RemoteError) as info:
            step("fence")
        assert info.value.code == P.NOT_FOUND
        # a prepare that fails (no such staged snapshot) leaves no operation; a corrected retry runs
        with pytest.raises(P.RemoteError) as info:
            step("prepare", params={**params, "snapshot": "missing.db"})
        assert info.value.code == P.NOT_FOUND and "missing.db" in info.value.message
        prepared = step("prepare", params=params)
        assert Path(prepared["prepared"]).is_dir()
        assert prepared["preflight"]["live_member"] is True
        # a retry (new request id) returns the recorded result; nothing runs twice
        assert step("prepare", params=params) == prepared
        journal = client.call("restore.status", {"op_id": "op1"})
        started = [e for e in journal["journal_tail"] if e.get("event") == "step" and e.get("status") == "started"]
        assert [e["step"] for e in started] == ["preflight", "prepare"]
        assert journal["state"] == "running" and sorted(journal["steps"]) == ["preflight", "prepare"]
        # the same operation id with other parameters is a conflict
        with pytest.raises(P.RemoteError) as info:
            step("prepare", params={**params, "token": "other"})
        assert info.value.code == P.CONFLICT
        # steps run in plan order only
        with pytest.raises(P.RemoteError) as info:
            step("swap")
        assert info.value.code == P.UNSAFE and "needs step fence" in info.value.message
        # the member name must be this agent's
        with pytest.raises(P.RemoteError) as info:
            client.call("restore.step", {"op_id": "op2", "step": "prepare", "params": {
                **params, "name": "other", "initial_cluster": f"other={m.peer_url}"}})
        assert info.value.code == P.UNSAFE and "not 'other'" in info.value.message
        # no snapshot while a restore is in progress; the staged snapshot cannot be removed
        with pytest.raises(P.RemoteError) as info:
            client.call("snapshot.take", timeout=10)
        assert info.value.code == P.BUSY
        with pytest.raises(P.RemoteError) as info:
            client.call("snapshot.put.abort", {"upload": "up"})
        assert info.value.code == P.UNSAFE
        status = client.status()
        assert status["restore"] == {"locked": False, "last_op": "op1", "last_state": "running", "open_ops": ["op1"]}
        # roll back before the swap: the prepared data goes, etcd keeps running untouched
        rolled = step("rollback")
        assert rolled["state"] == "rolled-back"
        assert not Path(prepared["prepared"]).exists()
        assert client.call("restore.status", {"op_id": "op1"})["state"] == "rolled-back"
        assert step("rollback")["state"] == "rolled-back"   # again: same answer
        with pytest.raises(P.RemoteError) as info:     # a closed operation runs nothing new
            step("prepare", params=params)
        assert info.value.code == P.CONFLICT and "rolled-back" in info.value.message
        assert etcd_member.get("/before") == "1"
        assert client.call("snapshot.put.abort", {"upload": "up"}) == {"removed": True}
        with pytest.raises(P.RemoteError) as info:
            client.call("restore.status", {"op_id": "nope"})
        assert info.value.code == P.NOT_FOUND
    assert "restore.step prepare of operation op1 requested by key" in agent.log_text()
