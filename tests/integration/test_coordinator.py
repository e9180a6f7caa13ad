"""The coordinator for real: its control socket, etcdguardctl, and (slow) a daemon with three
agents in front of a 3-member loopback etcd cluster."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import zstandard
from etcdguard.common.base.errors import ConfigError
from etcdguard.common.wire import keys
from etcdguard.coordinator.control import server as control

from tests.helpers.agentconf import render_toml
from tests.helpers.coordinator import DAEMON, Coordinator, coordinator_config, run_ctl, scrape
from tests.helpers.net import wait_until


def minimal_config(tmp_path: Path, socket_path: Optional[Path] = None) -> Path:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(render_toml({
        "coordinator": {"state_dir": str(tmp_path / "state"), "insecure": True,
                        "control_socket": str(socket_path or tmp_path / "run" / "c.sock")},
        "vault": {"dir": str(tmp_path / "vault")},
        "metrics": {"enabled": False},
        "drill": {"enabled": False},
    }) + '[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\n')
    return cfg


# -- the control socket ----------------------------------------------------------


class Recorder:
    """A control handler whose `slow` command waits for the test to release it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.finished = threading.Event()
        self.peers: list[control.PeerCred] = []

    def __call__(self, cmd: str, args: dict[str, Any], emit: control.Emit, peer: control.PeerCred) -> Any:
        self.peers.append(peer)
        if cmd == "echo":
            emit({"message": "working"})
            return {"args": args}
        if cmd == "slow":
            emit({"bytes": 1, "total": 2})
            assert self.release.wait(30)
            emit({"bytes": 2, "total": 2})   # the client is gone: must not fail the work
            self.finished.set()
            return {"done": True}
        raise ConfigError(f"unknown command {cmd!r}")


@pytest.fixture
def server(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    rec = Recorder()
    srv = control.ControlServer(run / "c.sock", rec)
    srv.start()
    try:
        yield srv, rec
    finally:
        rec.release.set()
        srv.stop()


def test_socket_is_0660_and_answers_with_progress_and_a_result(server):
    srv, rec = server
    assert stat.S_IMODE(os.stat(srv.path).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(srv.path).st_mode)
    progress: list[dict[str, Any]] = []
    result = control.request(srv.path, "echo", {"x": 1}, on_progress=progress.append)
    assert result == {"args": {"x": 1}}
    assert progress == [{"message": "working"}]
    peer = rec.peers[0]
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_errors_carry_their_exit_code(server):
    srv, _ = server
    with pytest.raises(control.ControlError, match="unknown command 'nope'") as info:
        control.request(srv.path, "nope")
    assert info.value.exit_code == 2


def test_malformed_request_lines_get_an_error_and_the_server_goes_on(server):
    srv, _ = server
    for line in (b"not json\n", b'{"cmd": 5}\n', b'{"cmd": "echo", "args": [], "x": 1}\n', b"[1]\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(srv.path))
            s.sendall(line)
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["exit_code"] == 2, line
    assert control.request(srv.path, "echo") == {"args": {}}


def test_a_dropped_client_does_not_abort_the_work(server):
    srv, rec = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(srv.path))
        s.sendall(b'{"cmd": "slow", "args": {}}\n')
        lines = s.makefile("rb")
        first = json.loads(lines.readline())
        assert first == {"progress": {"heartbeat": True}}   # the daemon acknowledges at once
        first = json.loads(lines.readline())
        assert first == {"progress": {"bytes": 1, "total": 2}}
    rec.release.set()
    assert rec.finished.wait(10), "the work stopped when its client went away"
    wait_until(lambda: srv.active_requests() == 0, 10, what="the request thread to end")
    assert control.request(srv.path, "echo") == {"args": {}}


def test_refuses_a_world_writable_or_foreign_directory(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(ConfigError, match=r"is world-writable \(mode 1777\)"):
        control.ControlServer(shared / "c.sock", Recorder()).start()
    assert not (shared / "c.sock").exists()
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o755)
        os.chown(foreign, 4242, 4242)
        with pytest.raises(ConfigError, match="belongs to uid 4242"):
            control.ControlServer(foreign / "c.sock", Recorder()).start()


def test_stale_socket_is_replaced_but_a_live_one_is_not(server, tmp_path):
    srv, _ = server
    with pytest.raises(ConfigError, match="another coordinator is running"):
        control.ControlServer(srv.path, Recorder()).start()
    stale = tmp_path / "run" / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()   # bound, never listening: what a killed daemon leaves
    second = control.ControlServer(stale, Recorder())
    second.start()
    try:
        assert control.request(stale, "echo") == {"args": {}}
    finally:
        second.stop()
    assert not stale.exists()
    regular = tmp_path / "run" / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(ConfigError, match="is not a socket; refusing to remove it"):
        control.ControlServer(regular, Recorder()).start()
    assert regular.read_text() == "not a socket"


# -- etcdguardctl without a daemon ------------------------------------------------


def test_ctl_without_a_daemon_names_the_socket(tmp_path):
    cfg = minimal_config(tmp_path)
    for cmd in ("status", "snapshots", "backup"):
        r = run_ctl(cmd, "--config", str(cfg))
        assert r.returncode == 1, r.stderr
        assert "coordinator daemon is not running" in r.stderr
        assert str(tmp_path / "run" / "c.sock") in r.stderr
    # --config before the subcommand works the same
    r = run_ctl("--config", str(cfg), "status", "--json")
    assert r.returncode == 1 and str(tmp_path / "run" / "c.sock") in r.stderr


def test_ctl_config_errors_exit_2(tmp_path):
    r = run_ctl("status", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2
    assert "missing.toml: config file not found" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[vault]\nkeep = 0\n")
    r = run_ctl("--config", str(bad), "snapshots")
    assert r.returncode == 2
    assert "vault.keep: expected an integer >= 1" in r.stderr


def test_restore_usage_errors_exit_2_before_asking_the_daemon(tmp_path):
    r = run_ctl("restore", "--help")
    assert r.returncode == 0
    for flag in ("--plan", "--yes", "--plan-id", "--resume", "--rollback", "--attach", "--cleanup", "--until"):
        assert flag in r.stdout, flag
    cfg = str(minimal_config(tmp_path))
    for args, words in [(["latest"], "needs --plan, --yes"), (["--yes"], "give the SNAPSHOT"),
                        (["latest", "--plan", "--yes"], "not both"), (["--resume", "r1", "--yes"], "no --yes"),
                        (["latest", "--plan", "--plan-id", "x"], "--plan-id goes with --yes"),
                        (["latest", "--resume", "r1"], "takes an operation id")]:
        r = run_ctl("restore", *args, "--config", cfg)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr, (args, r.stderr)


def test_keygen_writes_a_usable_pair_without_config_or_daemon(tmp_path):
    kdir = tmp_path / "keys"
    r = run_ctl("keygen", "coordinator", "--dir", str(kdir), "--json", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["public_key"] == str(kdir / "coordinator.key")
    assert out["secret_key"] == str(kdir / "coordinator.key_secret")
    assert stat.S_IMODE(os.stat(kdir / "coordinator.key_secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(kdir).st_mode) == 0o700
    public, _secret = keys.load_keypair(kdir / "coordinator.key_secret")
    assert keys.load_public(kdir / "coordinator.key") == public == out["public"].encode()
    # never overwrites a key
    again = run_ctl("keygen", "coordinator", "--dir", str(kdir))
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert keys.load_public(kdir / "coordinator.key") == public
    bad = run_ctl("keygen", "../evil", "--dir", str(kdir))
    assert bad.returncode == 2


def test_daemon_config_problems_exit_2_with_the_key_named(tmp_path):
    no_members = tmp_path / "empty.toml"
    no_members.write_text(render_toml({"coordinator": {"control_socket": str(tmp_path / "run" / "c.sock")}}))
    r = subprocess.run([*DAEMON, "--config", str(no_members)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "empty.toml: no [[members]]" in r.stderr
    keys.generate("coordinator", tmp_path / "keys")
    missing_key = tmp_path / "nokey.toml"
    missing_key.write_text(render_toml({
        "coordinator": {"control_socket": str(tmp_path / "run" / "c.sock"),
                        "secret_key": str(tmp_path / "keys" / "coordinator.key_secret")},
        "vault": {"dir": str(tmp_path / "vault")}, "metrics": {"enabled": False},
    }) + f'[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\npublic_key = "{tmp_path / "m1.key"}"\n')
    r = subprocess.run([*DAEMON, "--config", str(missing_key)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert f"nokey.toml: members[0].public_key {tmp_path / 'm1.key'}: no such file" in r.stderr
    assert not (tmp_path / "run" / "c.sock").exists()


# -- real agents (slow) --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_agent_killed_mid_pull_leaves_nothing_and_the_next_pull_succeeds(etcd_factory, etcd_build, tmp_path):
    from etcdguard.coordinator.agents.client import AgentUnreachable
    from etcdguard.coordinator.vault.store import Incoming, Vault

    from tests.helpers.agents import AgentProcess, CoordinatorKeys
    from tests.helpers.etcd import load_data

    member = etcd_factory.member(etcd_build)
    load_data(member, 12_000_000, threads=4)
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(member, tmp_path / "agent", authorized=[ckeys.public_path])
    assert agent.seeded is not None and agent.seeded.size > 8 << 20
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    incoming = Incoming.from_agent(member.name, agent.seeded.to_json())
    try:
        agent.start()
        killed: list[int] = []

        def kill_at_first_chunk(done: int, total: int) -> None:
            if not killed:
                killed.append(done)
                agent.kill()

        def fetch(dest: Path, progress: Any) -> None:
            with agent.client(ckeys) as client:
                client.fetch_snapshot(incoming.original_name, dest, expected_sha256=incoming.sha256,
                                      expected_size=incoming.size, progress=progress, timeout=2.0)

        with pytest.raises(AgentUnreachable):
            vault.pull(incoming, lambda dest: fetch(dest, kill_at_first_chunk))
        assert killed and killed[0] < incoming.size
        assert list(vault.dir.iterdir()) == []   # no partial file, no entry
        assert vault.list() == []

        agent.start()
        entry, pulled = vault.pull(incoming, lambda dest: fetch(dest, None))
        assert pulled
        assert hashlib.sha256(Path(entry.path).read_bytes()).hexdigest() == agent.seeded.sha256
        assert sorted(p.name for p in vault.dir.iterdir()) == [f"{entry.sha256}.db", f"{entry.sha256}.json"]
        assert Vault(vault.dir).list() == [entry]
    finally:
        agent.stop()


# -- the daemon with three real agents (slow) -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_status_backup_snapshots_restart_and_a_dead_agent(etcd_cluster3, tmp_path):
    from tests.helpers.agents import CoordinatorKeys, start_agents, stop_all
    from tests.helpers.net import free_port

    cluster = etcd_cluster3
    for i in range(50):
        cluster.members[i % 3].put(f"/registry/k{i}", "v" * 200)
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agents = start_agents(cluster, tmp_path / "agents", ckeys)
    metrics_port = free_port()
    coord = Coordinator(coordinator_config(tmp_path, ckeys, agents, metrics_port), tmp_path / "coordinator.log")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    try:
        coord.start({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"})
        coord.wait_ready()
        leader = cluster.leader().name

        # systemd: READY=1 with a status line, then watchdog pings (every 0.5 s for WatchdogSec=1s)
        seen: list[str] = []

        def notified() -> bool:
            with contextlib.suppress(socket.timeout):
                seen.append(notify.recv(4096).decode())
            return any("READY=1" in m for m in seen) and sum("WATCHDOG=1" in m for m in seen) >= 2
        wait_until(notified, 15, interval=0.01, what=f"READY=1 and watchdog pings (got {seen})")
        ready = next(m for m in seen if "READY=1" in m)
        assert ("STATUS=" in ready and "next pull" in ready) or "pulling" in ready, ready

        # status: three reachable members, one leader (etcd's), one cluster id
        status = coord.ctl_json("status")
        rows = {m["member"]: m for m in status["members"]}
        assert sorted(rows) == ["m1", "m2", "m3"]
        assert all(m["reachable"] and m["healthy"] for m in rows.values()), rows
        assert [n for n, m in rows.items() if m["is_leader"]] == [leader]
        assert status["cluster"]["leader"] == leader
        ids = {m["cluster_id"] for m in rows.values()}
        assert len(ids) == 1 and None not in ids
        assert status["cluster"]["cluster_id"] in ids and status["cluster"]["consistent"]
        for a in agents:   # each row shows that agent's seeded snapshot (or a newer one)
            assert rows[a.member.name]["newest_backup"]["revision"] >= a.seeded.revision

        # backup: taken on a follower, pulled into the vault, identical to the agent's file.
        # A write first, so the new snapshot differs from the seeded ones (members' files of
        # the same revision can be byte-identical, and the vault stores one copy).
        cluster.members[0].put("/registry/after-start", "x")
        r = coord.ctl("backup", "--json")
        assert r.returncode == 0, f"{r.stderr}\n{coord.log_tail()}"
        result = json.loads(r.stdout)
        entry = result["entry"]
        assert result["pulled"] is True
        assert result["member"] != leader and entry["member"] == result["member"]
        assert re.search(r"B / [0-9.]+ \w*B \(100%\)", r.stderr), r.stderr   # progress: bytes / total
        source = next(a for a in agents if a.member.name == result["member"])
        sidecar = json.loads((source.store_dir / (result["snapshot"]["name"] + ".json")).read_text())
        vault_file = Path(entry["path"])   # compressed by the agent as it streamed it (the default)
        assert vault_file == tmp_path / "vault" / f"{sidecar['sha256']}.db.zst" and entry["compression"] == "zstd"
        plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(vault_file.read_bytes()),
                                                           read_across_frames=True).read()
        assert hashlib.sha256(plain).hexdigest() == sidecar["sha256"] == entry["sha256"]
        assert plain == (source.store_dir / result["snapshot"]["name"]).read_bytes()
        assert len(plain) == sidecar["size"] == entry["size"] > vault_file.stat().st_size == entry["stored_size"]
        assert (entry["hashkv"], entry["key_count"]) == (sidecar["hashkv"], sidecar["key_count"])
        assert entry["hashkv"] is not None and entry["key_count"] >= 1
        assert stat.S_IMODE(vault_file.stat().st_mode) == 0o600
        meta = json.loads((tmp_path / "vault" / f"{entry['sha256']}.json").read_text())
        assert meta["member"] == result["member"] != leader
        assert meta["revision"] == sidecar["revision"] and meta["cluster_id"] == sidecar["cluster_id"]
        assert meta["original_name"] == sidecar["name"]

        # snapshots: lists it, newest first
        listed = coord.ctl_json("snapshots")
        assert entry["sha256"] in [e["sha256"] for e in listed]
        assert [e["created_unix"] for e in listed] == sorted((e["created_unix"] for e in listed), reverse=True)
        assert listed[0]["sha256"] == entry["sha256"]
        text = coord.ctl("snapshots")
        assert text.returncode == 0 and entry["sha256"][:12] in text.stdout

        m = scrape(metrics_port)
        assert m["etcdguard_vault_snapshots_retained"] == len(listed)
        assert m["etcdguard_vault_members_reachable"] == 3
        assert m["etcdguard_vault_last_size_bytes"] == entry["size"]
        assert m["etcdguard_vault_age_seconds"] < 600
        assert m["etcdguard_vault_interval_seconds"] == 3600

        # restart: the catalog is intact
        assert coord.stop() == 0
        assert not (tmp_path / "run" / "coordinator.sock").exists()
        coord.start()
        coord.wait_ready()
        assert coord.ctl_json("snapshots") == listed

        # a dead agent: status still reports (exit 0); a backup on it is refused (exit 3)
        dead = next(a for a in agents if a.member.name != leader)
        dead.kill()
        started = time.monotonic()
        status = coord.ctl_json("status")
        assert time.monotonic() - started < 4.5   # each agent gets 1.5 s, not request_timeout (5 s)
        rows = {m["member"]: m for m in status["members"]}
        assert rows[dead.member.name]["reachable"] is False
        assert "did not answer status within 1.5s" in rows[dead.member.name]["error"]
        assert rows[dead.member.name]["state"] == "unreachable"
        assert status["cluster"]["quorum"]["state"] == "held", status["cluster"]["quorum"]
        assert all(rows[n]["reachable"] for n in rows if n != dead.member.name)
        assert status["cluster"]["reachable"] == 2 and status["cluster"]["leader"] == leader
        assert status["cluster"]["consistent"]
        human = coord.ctl("status")
        assert human.returncode == 0, human.stderr
        assert dead.member.name in human.stdout and "2/3 agents reachable" in human.stdout
        refused = coord.ctl("backup", "--member", dead.member.name)
        assert refused.returncode == 3, refused.stderr
        assert "unreachable" in refused.stderr and dead.member.name in refused.stderr
        unknown = coord.ctl("backup", "--member", "nope")
        assert unknown.returncode == 2 and "no member named 'nope'" in unknown.stderr
        assert coord.ctl_json("snapshots") == listed   # refusals changed nothing
    except BaseException:
        print(f"\n[coordinator log]\n{coord.log_tail(120)}")
        for a in agents:
            print(f"\n[agent {a.member.name}]\n{a.log_tail(40)}")
        raise
    finally:
        coord.stop()
        stop_all(agents)
        notify.close()


# -- vault entry kinds across a restore (slow) ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_latest_stays_the_scheduled_or_manual_snapshot_after_a_restore_took_a_safety_snapshot(
        etcd_factory, etcd_build, tmp_path):
    from tests.helpers.restore_rig import RestoreRig

    cluster = etcd_factory.cluster(etcd_build, size=1)
    member = cluster.members[0]
    member.put("/registry/before", "1")
    rig = RestoreRig(cluster, tmp_path)
    try:
        rig.start()
        # the start pulls the agent's snapshot (scheduled); then one by hand (manual)
        scheduled = wait_until(lambda: [e for e in rig.ctl_json("snapshots") if e["kind"] == "scheduled"], 60,
                               what="the scheduled pull at start")[0]
        member.put("/registry/manual", "2")
        manual = rig.backup()
        assert manual["kind"] == "manual" and manual["revision"] > scheduled["revision"]
        member.put("/registry/after-the-backup", "3")   # the live cluster is ahead: its safety snapshot is newer

        done = rig.ctl_json("restore", "latest", "--yes")
        assert done["state"] == "done" and done["snapshot"] == manual["sha256"]
        safety = done["pre_restore_snapshot"]
        listed = {e["sha256"]: e for e in rig.ctl_json("snapshots")}
        assert listed[safety]["kind"] == "pre-restore" and listed[safety]["pinned"].startswith("pre-restore")
        assert listed[safety]["revision"] > manual["revision"]
        assert (listed[manual["sha256"]]["kind"], listed[scheduled["sha256"]]["kind"]) == ("manual", "scheduled")
        text = rig.ctl("snapshots").stdout
        assert "KIND" in text and "pre-restore" in text and "manual" in text

        # 'latest' everywhere it is accepted: the manual snapshot, never the newer safety snapshot
        plan = rig.ctl("restore", "latest", "--plan", "--json")
        assert json.loads(plan.stdout)["snapshot"]["id"] == manual["sha256"], plan.stderr
        out = tmp_path / "latest.db"
        exported = rig.ctl_json("export", "latest", "--output", str(out))
        assert exported["id"] == manual["sha256"]
        assert hashlib.sha256(out.read_bytes()).hexdigest() == manual["sha256"]
        assert rig.ctl_json("pin", "latest", "--reason", "kept")["sha256"] == manual["sha256"]
        # the safety snapshot is chosen by its id
        assert json.loads(rig.ctl("restore", safety[:12], "--plan", "--json").stdout)["snapshot"]["id"] == safety

        # entries stored before kinds: the restore's pin makes the safety snapshot pre-restore, the rest scheduled
        for sha in (safety, manual["sha256"]):
            sidecar = tmp_path / "vault" / f"{sha}.json"
            meta = json.loads(sidecar.read_text())
            del meta["kind"]
            sidecar.write_text(json.dumps(meta))
        rig.coordinator.stop()
        rig.start_coordinator()
        kinds = {e["sha256"]: e["kind"] for e in rig.ctl_json("snapshots")}
        assert (kinds[safety], kinds[manual["sha256"]]) == ("pre-restore", "scheduled")
        assert json.loads(rig.ctl("restore", "latest", "--plan", "--json").stdout)["snapshot"]["id"] != safety
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
