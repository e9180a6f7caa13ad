"""Runtime backends against real processes: etcd (3.4 and 3.5), the stand-in kube-apiserver,
the test kubelet (static pods) and a stand-in systemctl.

"Stopped" is asserted independently of the code under test: a raw TCP connect
to the client port must be refused AND a raw ``flock`` on ``member/snap/db``
must succeed. Data survives a stop/start: a key written before is read after.

systemd is not PID 1 on this machine, so ``systemctl`` cannot work here; the
systemd backend runs against ``SystemctlStandin``, which records its calls and
really starts/stops the unit's process (or, for the negative test, pretends to).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard.agent.config import AgentConfig, ApiserverSettings, EtcdSettings
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.runtime.base import RuntimeError_, StopNotProven
from etcdguard.agent.runtime.factory import make_runtime
from etcdguard.agent.runtime.process import ProcessService
from etcdguard.agent.runtime.proof import AllOf, ProcessesGone, etcd_proof, wait_etcd_stopped, wait_port_closed
from etcdguard.agent.runtime.static_pod import StaticPodService
from etcdguard.agent.runtime.systemd import SystemdService

from tests.conftest import EtcdFactory
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.etcd import EtcdBuild, EtcdMember
from tests.helpers.kubelet import TestKubelet
from tests.helpers.manifests import apiserver_manifest_json, etcd_manifest_yaml
from tests.helpers.net import free_port, free_server_port, wait_until
from tests.helpers.standins import SystemctlStandin, apiserver_command, livez

STOP_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# independent checks


def port_refused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def flock_obtainable(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        assert exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def assert_etcd_gone(member: EtcdMember) -> None:
    assert port_refused(member.client_port), "client port still accepts connections"
    db = member.data_dir / "member" / "snap" / "db"
    assert db.is_file()
    assert flock_obtainable(db), f"{db} still locked"
    # a zombie leader (exit is irrevocable) may wait a moment for its other threads before it can be reaped
    wait_until(lambda: member.pids() == [], 5, what="no etcd process left")


# ---------------------------------------------------------------------------
# fixtures (the kubelet is this module's own; etcd builds and members come from conftest)


@pytest.fixture
def member(etcd_factory: EtcdFactory, etcd_build: EtcdBuild) -> EtcdMember:
    """An etcd member (each build in turn) that is NOT started: the runtime under test starts it.

    The factory kills whatever serves its data dir at teardown, whoever started it.
    """
    return etcd_factory.member(etcd_build, start=False)


# ---------------------------------------------------------------------------
# process backend


def process_service(member: EtcdMember, state: Path, kill_grace: float = 2.0) -> ProcessService:
    return ProcessService("etcd", member.command, state / "run" / "etcd.pid", state / "logs" / "etcd.log",
                          etcd_proof([member.client_url], member.data_dir), kill_grace=kill_grace)


def test_process_start_stop_start_keeps_data(member: EtcdMember, tmp_path: Path) -> None:
    svc = process_service(member, tmp_path / "state")
    assert not svc.is_running()
    svc.start(30)
    pid = int((tmp_path / "state" / "run" / "etcd.pid").read_text())
    assert svc.is_running() and member.pids() == [pid]
    member.wait_healthy(30)
    member.put("/before/stop", "v1")
    assert (tmp_path / "state" / "logs" / "etcd.log").stat().st_size > 0

    svc.stop(STOP_TIMEOUT)
    assert_etcd_gone(member)
    assert not svc.is_running()
    assert svc.last_stop is not None and svc.last_stop.pid == pid
    assert "flock obtainable" in svc.last_stop.evidence

    svc.start(30)
    member.wait_healthy(30)
    assert member.get("/before/stop") == "v1"
    svc.start(30)  # already running: a no-op, still one process
    assert len(member.pids()) == 1


def test_process_adopts_etcd_started_by_hand(member: EtcdMember, tmp_path: Path) -> None:
    member.launch()  # started by "someone else" (the harness), not by the service
    member.put("/adopted", "yes")
    svc = process_service(member, tmp_path / "state")
    assert not svc.is_running()
    # Something else serves this member with another command line: never start a second etcd.
    other = ProcessService("etcd", [*member.command, "--log-level=info"], svc.pid_file, svc.log_file,
                           etcd_proof([member.client_url], member.data_dir))
    with pytest.raises(RuntimeError_, match="adopt it by writing its pid"):
        other.start(30)
    assert member.pids() == [member.pid]
    assert not svc.pid_file.exists()

    # Exactly the configured command, just unrecorded (e.g. the agent died before writing the
    # pid file): start adopts it instead of launching a second copy.
    svc.start(30)
    assert svc.pid_file.read_text().strip() == str(member.pid)
    assert member.pids() == [member.pid]
    assert svc.is_running()
    svc.stop(STOP_TIMEOUT)
    assert_etcd_gone(member)

    svc.start(30)
    member.wait_healthy(30)
    assert member.get("/adopted") == "yes"


def test_process_stop_finds_and_stops_our_unrecorded_etcd(member: EtcdMember, tmp_path: Path) -> None:
    # An agent killed between launching etcd and writing the pid file leaves exactly the configured
    # command running unrecorded: the next agent's stop must stop it, not wait for it to go away.
    member.launch()
    member.wait_healthy(30)
    svc = process_service(member, tmp_path / "state")
    assert not svc.pid_file.exists() and not svc.is_running()
    svc.stop(STOP_TIMEOUT, grace=0.0)
    assert svc.last_stop is not None and svc.last_stop.pid == member.pid and svc.last_stop.signals == ("SIGKILL",)
    assert_etcd_gone(member)
    assert not svc.pid_file.exists()


def test_process_never_signals_a_recycled_pid(member: EtcdMember, tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        svc = process_service(member, tmp_path / "state")
        svc.pid_file.parent.mkdir(parents=True)
        svc.pid_file.write_text(f"{other.pid}\n")  # a pid that now belongs to something else
        assert not svc.is_running()
        svc.stop(5)  # nothing of ours runs: no signal, the proof holds (no db yet, port closed)
        assert other.poll() is None, "stop signalled a process that is not etcd"
    finally:
        other.kill()
        other.wait()


def test_process_stop_times_sigterm_vs_sigkill(member: EtcdMember, tmp_path: Path,
                                                record_property: pytest.RecordProperty) -> None:
    """Measured on a single member: SIGTERM alone, and SIGKILL right away (kill_grace=0)."""
    term = process_service(member, tmp_path / "state", kill_grace=30.0)
    term.start(30)
    member.wait_healthy(30)
    term.stop(STOP_TIMEOUT)
    assert term.last_stop is not None and term.last_stop.signals == ("SIGTERM",)
    assert_etcd_gone(member)

    kill = process_service(member, tmp_path / "state", kill_grace=0.0)
    kill.start(30)
    member.wait_healthy(30)
    kill.stop(STOP_TIMEOUT)
    assert kill.last_stop is not None and kill.last_stop.signals == ("SIGKILL",)   # no pointless SIGTERM first
    assert_etcd_gone(member)

    record_property("stop_sigterm_seconds", round(term.last_stop.seconds, 3))
    record_property("stop_sigkill_seconds", round(kill.last_stop.seconds, 3))
    print(f"\nsingle-member stop: SIGTERM {term.last_stop.seconds:.3f}s, "
          f"SIGKILL {kill.last_stop.seconds:.3f}s (signal to proof)")


def proc_stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) of ``pid`` from /proc/PID/stat; ("", 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", 0
    return fields[0], int(fields[1])


def zombie_children(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            state, ppid = proc_stat(int(entry.name))
            if ppid == parent and state == "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_an_etcd_the_agent_started_is_reaped_at_once_when_it_is_killed(etcd_member: EtcdMember,
                                                                        tmp_path: Path) -> None:
    """The agent daemon (process runtime) starts etcd itself, as a restore's undo does; SIGKILLed, that
    etcd must not stay a zombie under the agent until the agent next looks at it."""
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path])
    assert agent.seeded is not None
    src = tmp_path / "snap.db"
    src.write_bytes(Path(agent.seeded.path).read_bytes())
    m = etcd_member
    params = {"snapshot": "up.db", "name": m.name, "initial_cluster": f"{m.name}={m.peer_url}",
              "token": "etcdguard-op1", "peer_url": m.peer_url, "bump_revision": 0}
    agent.start()
    try:
        with agent.client(ckeys) as client:
            assert client.put_snapshot(src, "up")["staged"] == "up.db"
            for step in ("preflight", "prepare", "fence", "stop"):
                args = {"op_id": "op1", "step": step, **({"params": params} if step == "prepare" else {})}
                client.call("restore.step", args, timeout=120)
            assert not m.is_running()
            # the rollback undoes the stop: the agent starts etcd, its own child from here on
            assert client.call("restore.step", {"op_id": "op1", "step": "rollback"}, timeout=120)["state"] == \
                "rolled-back"
        m.wait_healthy(30)
        started = [pid for pid in m.pids() if proc_stat(pid)[1] == agent.pid]
        assert len(started) == 1, (m.pids(), agent.pid)
        pid = started[0]

        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proc_stat(pid) == ("", 0) and zombie_children(agent.pid) == [], 5,
                   what=f"etcd pid {pid} reaped by the agent (zombies: {zombie_children(agent.pid)})")
        wait_until(lambda: f"etcd pid {pid} exited on its own (killed by SIGKILL)" in agent.log_text(), 5,
                   what="the agent's log line for the exit")
    finally:
        agent.stop()


def test_process_apiserver_standin_via_factory(tmp_path: Path) -> None:
    port = free_server_port()
    cfg = AgentConfig(
        etcd=EtcdSettings(runtime="process", start_command=("etcd",), pid_file=tmp_path / "etcd.pid"),
        apiserver=ApiserverSettings(start_command=tuple(apiserver_command(port)), pid_file=tmp_path / "api.pid"),
    )
    local = LocalMember(name="m1", data_dir=tmp_path / "data", endpoints=(f"http://127.0.0.1:{free_port()}",))
    rt = make_runtime(cfg, local, tmp_path / "state")
    api = rt.apiserver
    assert isinstance(api, ProcessService)
    try:
        api.start(10)
        assert wait_until(lambda: livez(port), 10, what="stand-in /livez") == "ok"
        api.stop(10)
        assert port_refused(port)
        assert api.last_stop is not None and api.last_stop.signals == ("SIGTERM",)
        assert "closed" in api.last_stop.evidence
    finally:
        pid = api.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def test_apiserver_stop_proof_watches_the_apiserver_not_a_sidecar_listed_first(tmp_path: Path) -> None:
    """With a sidecar as the pod's first container, the proof follows the kube-apiserver process.

    Both containers' commands run as real processes; only the apiserver's decides.
    """
    port = free_server_port()
    api_argv = apiserver_command(port)
    sidecar_argv = [sys.executable, "-c", "import time; time.sleep(600)", "audit-shipper-sidecar"]
    manifest = tmp_path / "manifests" / "kube-apiserver.yaml"
    manifest.parent.mkdir()
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: kube-apiserver}\nspec:\n  containers:\n"
        f"  - name: audit-shipper\n    command: {json.dumps(sidecar_argv)}\n"
        f"  - name: kube-apiserver\n    command: {json.dumps(api_argv[:1])}\n    args: {json.dumps(api_argv[1:])}\n"
    )
    cfg = AgentConfig(etcd=EtcdSettings(runtime="process", start_command=("etcd",), pid_file=tmp_path / "p"),
                      apiserver=ApiserverSettings(manifest=manifest))
    local = LocalMember(name="m1", data_dir=tmp_path / "d", endpoints=(f"http://127.0.0.1:{free_port()}",))
    api = make_runtime(cfg, local, tmp_path / "state").apiserver
    assert isinstance(api, StaticPodService) and isinstance(api.proof, AllOf)
    gone = [p for p in api.proof.proofs if isinstance(p, ProcessesGone)]
    assert len(gone) == 1
    sidecar = subprocess.Popen(sidecar_argv)
    apiserver = subprocess.Popen(api_argv)
    try:
        wait_until(lambda: livez(port), 10, what="the stand-in apiserver")
        ok, why = gone[0].check()
        assert not ok and f"pid {apiserver.pid} " in why and f"pid {sidecar.pid} " not in why
        apiserver.kill()
        apiserver.wait()
        # the sidecar still runs, and that is not the apiserver
        assert wait_until(lambda: gone[0].check()[0], 10, what="the proof to see the apiserver gone")
        assert api.proof.check()[0] and sidecar.poll() is None
    finally:
        for proc in (apiserver, sidecar):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# static-pod backend with the test kubelet


def test_static_pod_etcd_and_apiserver(member: EtcdMember, kubelet: TestKubelet, tmp_path: Path) -> None:
    manifests, state = kubelet.manifests_dir, tmp_path / "state"
    etcd_yaml = manifests / "etcd.yaml"
    etcd_yaml.write_text(etcd_manifest_yaml(member, grace=5))
    etcd_yaml.chmod(0o600)
    api_port = free_server_port()
    api_json = manifests / "kube-apiserver.json"
    api_json.write_text(apiserver_manifest_json(api_port, grace=5))
    api_json.chmod(0o640)
    originals = {p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns) for p in (etcd_yaml, api_json)}

    member.wait_healthy(30)
    member.put("/static/pod", "kept")
    assert wait_until(lambda: livez(api_port), 10, what="stand-in apiserver via kubelet") == "ok"

    cfg = AgentConfig(etcd=EtcdSettings(runtime="static-pod", manifest=etcd_yaml),
                      apiserver=ApiserverSettings(manifest=api_json))
    local = LocalMember(name="m1", data_dir=member.data_dir, endpoints=(member.client_url,), runtime="static-pod",
                        manifest=etcd_yaml)
    rt = make_runtime(cfg, local, state)
    assert isinstance(rt.etcd, StaticPodService) and isinstance(rt.apiserver, StaticPodService)
    assert rt.etcd.is_running() and rt.apiserver.is_running()
    park = state / "parked-manifests"

    # fence, then stop etcd: both manifests parked, byte-identical, same mode; processes proven gone
    rt.apiserver.stop(STOP_TIMEOUT)
    assert port_refused(api_port)
    assert kubelet.pid("kube-apiserver.json") is None
    rt.etcd.stop(STOP_TIMEOUT)
    assert_etcd_gone(member)
    assert sorted(os.listdir(manifests)) == []
    for name, (data, mode, mtime) in originals.items():
        parked = park / name
        assert parked.read_bytes() == data
        assert parked.stat().st_mode == mode
        assert parked.stat().st_mtime_ns == mtime
    assert [e.what for e in kubelet.events_for("etcd.yaml")][-2:] == ["sigterm", "stopped"]

    # idempotent: stopping again only proves
    t0 = time.monotonic()
    rt.etcd.stop(STOP_TIMEOUT)
    assert time.monotonic() - t0 < 5.0   # a proof, not a wait for STOP_TIMEOUT

    # start: back in place with the same bytes, mode and mtime; etcd serves the old data
    rt.etcd.start(30)
    member.wait_healthy(30)
    assert member.get("/static/pod") == "kept"
    rt.apiserver.start(30)
    assert wait_until(lambda: livez(api_port), 10, what="stand-in apiserver back") == "ok"
    for name, (data, mode, mtime) in originals.items():
        back = manifests / name
        assert (back.read_bytes(), back.stat().st_mode, back.stat().st_mtime_ns) == (data, mode, mtime)
    assert sorted(os.listdir(park)) == []
    rt.etcd.start(30)  # no-op: the manifest is present
    assert kubelet.pid("etcd.yaml") is not None


def test_static_pod_waits_out_the_grace_period(kubelet: TestKubelet, tmp_path: Path) -> None:
    """A process that ignores SIGTERM is gone only after the kubelet's SIGKILL; stop waits for that."""
    port = free_server_port()
    manifest = kubelet.manifests_dir / "kube-apiserver.json"
    manifest.write_text(apiserver_manifest_json(port, grace=1, ignore_sigterm=True))
    wait_until(lambda: livez(port), 10, what="stand-in apiserver")
    cfg = AgentConfig(etcd=EtcdSettings(runtime="process", start_command=("etcd",), pid_file=tmp_path / "p"),
                      apiserver=ApiserverSettings(manifest=manifest))
    local = LocalMember(name="m1", data_dir=tmp_path / "d", endpoints=(f"http://127.0.0.1:{free_port()}",))
    api = make_runtime(cfg, local, tmp_path / "state").apiserver
    assert api is not None
    t0 = time.monotonic()
    api.stop(STOP_TIMEOUT)
    elapsed = time.monotonic() - t0
    assert port_refused(port)
    assert [e.what for e in kubelet.events_for("kube-apiserver.json")][-3:] == ["sigterm", "sigkill", "stopped"]
    assert elapsed >= 1.0, "stop returned before the kubelet's SIGKILL"


def test_static_pod_stop_not_proven_when_kubelet_ignores_the_parking(member: EtcdMember, tmp_path: Path) -> None:
    """No kubelet watches this dir: parking changes nothing, so the proof must fail in time."""
    member.launch()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "etcd.yaml").write_text(etcd_manifest_yaml(member, grace=5))
    svc = StaticPodService("etcd", manifests / "etcd.yaml", tmp_path / "park",
                           etcd_proof([member.client_url], member.data_dir))
    t0 = time.monotonic()
    with pytest.raises(StopNotProven) as err:
        svc.stop(1.0)
    assert time.monotonic() - t0 < 5.0   # the 1 s bound and the proof, with room for a busy machine
    assert "still answers" in str(err.value) and "is locked by pid" in str(err.value)
    assert member.healthy()


# ---------------------------------------------------------------------------
# the proof on its own


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A separate process holding an exclusive flock on <data>/member/snap/db (and no port)."""
    data_dir = tmp_path / "data"
    db = data_dir / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\0" * 4096)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield data_dir, proc
    finally:
        proc.kill()
        proc.wait()


def test_proof_times_out_while_db_is_locked(lock_holder: tuple[Path, subprocess.Popen[str]]) -> None:
    data_dir, holder = lock_holder
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(StopNotProven) as err:
        wait_etcd_stopped([url], data_dir, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 4.0
    msg = str(err.value)
    assert f"is locked by pid {holder.pid}" in msg
    assert "still answers" not in msg
    holder.kill()
    holder.wait()
    assert "flock obtainable" in wait_etcd_stopped([url], data_dir, timeout=1.0)


def test_proof_times_out_while_port_answers(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:  # accept and hang up, like a live server
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with pytest.raises(StopNotProven, match=f"port 127.0.0.1:{port} still answers"):
            wait_port_closed(f"127.0.0.1:{port}", timeout=0.3)
        with pytest.raises(StopNotProven, match="still answers"):
            wait_etcd_stopped([f"http://127.0.0.1:{port}"], tmp_path / "no-data", timeout=0.3)
    finally:
        stop.set()
        server.join()
        listener.close()
    assert "closed" in wait_port_closed(f"127.0.0.1:{port}", timeout=1.0)


def test_proof_hung_listener_is_not_closed() -> None:
    """A listener that never accepts: once its queue is full, connects time out. That is no proof."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            with pytest.raises(StopNotProven, match=r"still answers|not proven closed"):
                wait_port_closed(f"127.0.0.1:{port}", timeout=1.0)
        finally:
            for c in fillers:
                c.close()


# ---------------------------------------------------------------------------
# systemd backend with the stand-in systemctl


def test_systemd_with_standin_systemctl(member: EtcdMember, tmp_path: Path) -> None:
    standin = SystemctlStandin(tmp_path / "bin", {"etcd.service": {"command": member.command}})
    svc = SystemdService("etcd", "etcd.service", etcd_proof([member.client_url], member.data_dir),
                         systemctl=str(standin.path))
    try:
        assert not svc.is_running()
        svc.start(30)
        member.wait_healthy(30)
        assert svc.is_running()
        member.put("/unit", "data")
        svc.stop(STOP_TIMEOUT)
        assert_etcd_gone(member)
        calls = standin.calls()
        assert ["start", "etcd.service"] in calls and ["stop", "etcd.service"] in calls
        assert calls.index(["start", "etcd.service"]) < calls.index(["stop", "etcd.service"])

        svc.start(30)
        member.wait_healthy(30)
        assert member.get("/unit") == "data"

        # a unit whose stop never reaches the process: systemctl says inactive, etcd still runs
        state = standin.units()
        state["etcd.service"]["stop"] = "noop"
        standin.state_file.write_text(json.dumps(state))
        t0 = time.monotonic()
        with pytest.raises(StopNotProven) as err:
            svc.stop(1.0)
        assert time.monotonic() - t0 < 5.0   # the 1 s bound and the proof, with room for a busy machine
        assert "still answers" in str(err.value) and "is locked by pid" in str(err.value)
        assert standin.calls()[-1] == ["stop", "etcd.service"]
        assert member.healthy()  # nothing further was done
    finally:
        standin.kill_all()
