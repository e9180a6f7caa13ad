"""Runtime backends without etcd: pure helpers, manifest parking, pid handling, and the
systemd backend against a stand-in ``systemctl``.

systemd is not PID 1 on this machine, so ``systemctl`` cannot work here: the
systemd tests point SystemdService at ``SystemctlStandin``, a script that
records each call and simulates unit states.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdguard.agent.config import AgentConfig, ApiserverSettings, EtcdSettings
from etcdguard.agent.discovery.goflags import apiserver_flags
from etcdguard.agent.discovery.manifests import ManifestError, pod_command
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.runtime.base import RuntimeError_, StopNotProven
from etcdguard.agent.runtime.factory import apiserver_address, make_runtime
from etcdguard.agent.runtime.process import ProcessService, child_env, parse_pid, program_matches
from etcdguard.agent.runtime.proof import (
    AllOf,
    DbUnlocked,
    PortsClosed,
    ProcessesGone,
    flock_free,
    parse_proc_locks,
    port_state,
    probe_target,
    same_command,
    wait_proven,
)
from etcdguard.agent.runtime.static_pod import StaticPodService, is_within, move_preserving
from etcdguard.agent.runtime.systemd import SystemdService
from etcdguard.common.base.errors import ConfigError

from tests.helpers.net import free_port, wait_until
from tests.helpers.standins import SystemctlStandin


class FakeProof:
    """A proof whose answers the test scripts: a fixed answer, or False until ``after`` checks."""

    def __init__(self, ok: bool = True, after: int = 0) -> None:
        self.ok, self.after, self.checks = ok, after, 0

    def check(self) -> tuple[bool, str]:
        self.checks += 1
        ok = self.ok and self.checks > self.after
        return ok, "fake: gone" if ok else "fake: still there"

    def describe(self) -> str:
        return "the fake proof"


# ---------------------------------------------------------------------------
# pure helpers


@pytest.mark.parametrize(("text", "expected"), [
    ("https://127.0.0.1:2379", ("127.0.0.1", 2379)),
    ("http://10.0.0.1:12379", ("10.0.0.1", 12379)),
    ("https://etcd.local", ("etcd.local", 2379)),
    ("http://0.0.0.0:2379", ("127.0.0.1", 2379)),
    ("http://:2379", ("127.0.0.1", 2379)),  # as etcd reads it: every address
    ("https://[::1]:2379", ("::1", 2379)),
    ("127.0.0.1:6443", ("127.0.0.1", 6443)),
    ("[::]:6443", ("::1", 6443)),
    ("http://[::]:2379", ("::1", 2379)),
    ("tcp://[fd00::5]:7479", ("fd00::5", 7479)),
    ("https://127.0.0.1:6443/livez", ("127.0.0.1", 6443)),
])
def test_probe_target(text: str, expected: tuple[str, int]) -> None:
    target = probe_target(text)
    assert (target.host, target.port) == expected


@pytest.mark.parametrize("bad", ["unix:///run/etcd.sock", "127.0.0.1:notaport", "", "  ", "::1:2379"])
def test_probe_target_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        probe_target(bad)


def test_ports_closed_validates_when_built() -> None:
    with pytest.raises(ValueError):
        PortsClosed(("unix:///x",))
    with pytest.raises(ValueError):
        PortsClosed(())


def test_port_state_refused_is_closed() -> None:
    assert port_state("127.0.0.1", free_port())[0] == "closed"


PROC_LOCKS = """\
1: OFDLCK ADVISORY  WRITE -1 fe:00:2172403 0 EOF
2: FLOCK  ADVISORY  WRITE 12298 fe:00:2172400 0 EOF
3: FLOCK  ADVISORY  WRITE 12249 fe:00:2172385 0 EOF
3: -> FLOCK  ADVISORY  WRITE 999 fe:00:2172385 0 EOF
4: POSIX  ADVISORY  READ 555 08:01:2172385 0 EOF
garbage line
"""


def test_parse_proc_locks() -> None:
    assert parse_proc_locks(PROC_LOCKS, 0xFE, 0x00, 2172385) == [12249]   # not the blocked waiter 999
    assert parse_proc_locks(PROC_LOCKS, 8, 1, 2172385) == [555]
    assert parse_proc_locks(PROC_LOCKS, 0xFE, 0, 1) == []
    assert parse_proc_locks(PROC_LOCKS, 0xFE, 0, 2172403) == []           # OFD locks have no pid


def test_same_command_and_program_matches() -> None:
    cmd = ["/usr/local/bin/kube-apiserver", "--secure-port=6443"]
    assert same_command(["kube-apiserver", "--secure-port=6443"], cmd)
    assert not same_command(["kube-apiserver", "--secure-port=6444"], cmd)
    assert not same_command(["kube-apiserver"], cmd)
    assert not same_command([], cmd)
    assert program_matches(["/usr/bin/etcd", "--name=x"], ["etcd", "--other"])
    assert not program_matches(["sleep", "300"], ["/usr/bin/etcd"])
    assert program_matches(["etcd-wrapper"], ["/opt/etcd"], exe="/opt/etcd-real", resolved="/opt/etcd-real")
    assert not program_matches(["python3"], ["/usr/bin/etcd"], exe=None, resolved="/usr/bin/etcd")


@pytest.mark.parametrize(("text", "pid"), [("1234\n", 1234), (" 77 extra", 77), ("", None), ("abc", None),
                                             ("1", None), ("0", None), ("-5", None)])
def test_parse_pid(text: str, pid: int | None) -> None:
    assert parse_pid(text) == pid


def test_child_env_drops_the_agents_systemd_handoffs() -> None:
    env = {"PATH": "/usr/bin", "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "LISTEN_FDS": "1",
           "ETCD_NAME": "kept"}
    assert child_env(env) == {"PATH": "/usr/bin", "ETCD_NAME": "kept"}


def test_pod_command_and_flags() -> None:
    doc = {"spec": {"containers": [
        {"name": "sidecar", "command": ["sleep"]},
        {"name": "kube-apiserver", "command": ["kube-apiserver"], "args": ["--secure-port=7443", "--bind-address",
                                                                           "10.0.0.5"]},
    ]}}
    argv = pod_command(doc, "kube-apiserver")
    assert argv == ["kube-apiserver", "--secure-port=7443", "--bind-address", "10.0.0.5"]
    # never by position: a pod without the named container has no command for it
    with pytest.raises(ManifestError, match=r"no spec\.containers\[\] entry named 'etcd'.*'sidecar'"):
        pod_command(doc, "etcd")
    with pytest.raises(ManifestError, match=r"no spec\.containers"):
        pod_command({"spec": {}}, "kube-apiserver")
    flags = apiserver_flags(argv)
    assert flags.get("secure-port") == "7443"
    assert flags.get("bind-address") == "10.0.0.5"
    assert flags.get("missing") is None
    assert apiserver_address(argv, None) == "10.0.0.5:7443"
    assert apiserver_address(["kube-apiserver", "--bind-address=0.0.0.0"], None) == "127.0.0.1:6443"
    assert apiserver_address(["kube-apiserver", "--bind-address=::1", "--secure-port=1"], None) == "[::1]:1"
    assert apiserver_address(["kube-apiserver", "--bind-address=::", "--secure-port=1"], None) == "[::1]:1"
    assert apiserver_address(["kube-apiserver", "--bind-address", "fd00::7", "--secure-port", "6443"],
                             None) == "[fd00::7]:6443"
    assert apiserver_address(None, "https://127.0.0.1:9443/livez") == "https://127.0.0.1:9443/livez"
    with pytest.raises(ConfigError):
        apiserver_address(["kube-apiserver", "--secure-port=x"], None)


def test_is_within(tmp_path: Path) -> None:
    (tmp_path / "manifests" / "sub").mkdir(parents=True)
    assert is_within(tmp_path / "manifests", tmp_path / "manifests")
    assert is_within(tmp_path / "manifests" / "sub", tmp_path / "manifests")
    assert not is_within(tmp_path / "manifests-parked", tmp_path / "manifests")
    (tmp_path / "link").symlink_to(tmp_path / "manifests")
    assert is_within(tmp_path / "link" / "x", tmp_path / "manifests")


# ---------------------------------------------------------------------------
# flock and proofs


def test_flock_free_and_db_unlocked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "member" / "snap" / "db"
    assert flock_free(db) is None
    assert DbUnlocked(data).check() == (True, f"{db} absent (nothing holds it)")
    db.parent.mkdir(parents=True)
    db.write_bytes(b"x")
    assert flock_free(db) is True
    fd = os.open(db, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts even within this process
        assert flock_free(db) is False
        ok, why = DbUnlocked(data).check()
        assert not ok and f"is locked by pid {os.getpid()}" in why
    finally:
        os.close(fd)
    assert flock_free(db) is True


def test_wait_proven_polls_until_true_and_bounds_time() -> None:
    proof = FakeProof(after=3)
    assert wait_proven(proof, 5.0, "thing", interval=0.001) == "fake: gone"
    assert proof.checks == 4
    never = FakeProof(ok=False)
    t0 = time.monotonic()
    with pytest.raises(StopNotProven, match=r"thing not proven stopped after 0\.2s: fake: still there"):
        wait_proven(never, 0.2, "thing", interval=0.01)
    assert 0.2 <= time.monotonic() - t0 < 1.0
    once = FakeProof(ok=False)
    with pytest.raises(StopNotProven):
        wait_proven(once, 0, "thing")
    assert once.checks == 1


def test_all_of_reports_every_failure() -> None:
    ok, why = AllOf((FakeProof(), FakeProof(ok=False), FakeProof(ok=False))).check()
    assert not ok and why == "fake: still there; fake: still there"
    assert AllOf((FakeProof(), FakeProof())).check() == (True, "fake: gone; fake: gone")


def test_processes_gone_sees_a_running_command() -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "etcdguard-unit-test-marker"]
    proc = subprocess.Popen(argv)
    try:
        # Until the child has exec'd, /proc shows the parent's argv: poll for the new one.
        wait_until(lambda: not ProcessesGone(tuple(argv)).check()[0], timeout=10, what="the child's argv in /proc")
        ok, why = ProcessesGone(tuple(argv)).check()
        assert not ok and f"pid {proc.pid}" in why
    finally:
        proc.kill()
        proc.wait()
    assert ProcessesGone(tuple(argv)).check()[0]


# ---------------------------------------------------------------------------
# moving manifests


def _manifest(path: Path, text: str = '{"kind": "Pod"}\n', mode: int = 0o600) -> tuple[bytes, int, int]:
    path.write_text(text)
    path.chmod(mode)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    st = path.stat()
    return path.read_bytes(), st.st_mode, st.st_mtime_ns


@pytest.mark.parametrize("force_copy", [False, True], ids=["rename", "copy"])
def test_move_preserving(tmp_path: Path, force_copy: bool) -> None:
    src, dst_dir = tmp_path / "manifests" / "etcd.yaml", tmp_path / "parked"
    src.parent.mkdir()
    dst_dir.mkdir()
    before = _manifest(src, mode=0o640)
    move_preserving(src, dst_dir / "etcd.yaml", force_copy=force_copy)
    dst = dst_dir / "etcd.yaml"
    assert not src.exists()
    assert (dst.read_bytes(), dst.stat().st_mode, dst.stat().st_mtime_ns) == before
    assert os.listdir(dst_dir) == ["etcd.yaml"]  # no temp file left behind


def test_move_preserving_across_filesystems(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    park = other / f"etcdguard-test-{os.getpid()}-{time.monotonic_ns()}"
    park.mkdir()
    try:
        src = tmp_path / "etcd.yaml"
        before = _manifest(src, mode=0o600)
        if os.getuid() == 0:
            os.chown(src, 1234, 5678)
        move_preserving(src, park / "etcd.yaml")
        dst = park / "etcd.yaml"
        assert not src.exists()
        assert (dst.read_bytes(), dst.stat().st_mode, dst.stat().st_mtime_ns) == before
        if os.getuid() == 0:
            assert (dst.stat().st_uid, dst.stat().st_gid) == (1234, 5678)
        move_preserving(dst, src)
        assert (src.read_bytes(), src.stat().st_mode, src.stat().st_mtime_ns) == before
    finally:
        for p in park.iterdir():
            p.unlink()
        park.rmdir()


# ---------------------------------------------------------------------------
# static-pod service (no kubelet: the proof is faked; the kubelet test is in integration)


@pytest.fixture
def pod(tmp_path: Path) -> tuple[StaticPodService, Path, tuple[bytes, int, int]]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    before = _manifest(manifests / "etcd.yaml")
    return StaticPodService("etcd", manifests / "etcd.yaml", tmp_path / "state" / "parked", FakeProof()), \
        manifests, before


def test_static_pod_park_and_return(pod: tuple[StaticPodService, Path, tuple[bytes, int, int]]) -> None:
    svc, manifests, before = pod
    svc.stop(1)
    assert os.listdir(manifests) == []
    parked = svc.parked_path
    assert (parked.read_bytes(), parked.stat().st_mode, parked.stat().st_mtime_ns) == before
    assert svc.park_dir.stat().st_mode & 0o777 == 0o700
    svc.stop(1)  # already parked: only proves
    assert parked.exists()
    svc.start(1)
    back = manifests / "etcd.yaml"
    assert (back.read_bytes(), back.stat().st_mode, back.stat().st_mtime_ns) == before
    assert not parked.exists()
    svc.start(1)  # present, nothing parked: no-op
    assert back.read_bytes() == before[0] and svc.last_note is None


def test_static_pod_leaves_a_manifest_someone_put_back(
        pod: tuple[StaticPodService, Path, tuple[bytes, int, int]]) -> None:
    svc, manifests, before = pod
    svc.stop(1)
    (manifests / "etcd.yaml").write_text('{"kind": "Pod", "edited": true}\n')
    svc.start(1)
    assert (manifests / "etcd.yaml").read_text() == '{"kind": "Pod", "edited": true}\n'
    assert svc.parked_path.read_bytes() == before[0]
    assert svc.last_note is not None and "already in place" in svc.last_note
    # stopping again parks the live one and keeps the older, different parked copy
    svc.stop(1)
    assert svc.parked_path.read_text() == '{"kind": "Pod", "edited": true}\n'
    kept = [p for p in svc.park_dir.iterdir() if ".superseded-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == before[0]


def test_static_pod_refusals(tmp_path: Path, pod: tuple[StaticPodService, Path, tuple[bytes, int, int]]) -> None:
    svc, manifests, _ = pod
    with pytest.raises(ConfigError, match="inside the kubelet's manifests dir"):
        StaticPodService("etcd", manifests / "etcd.yaml", manifests / "parked", FakeProof())
    (manifests / "etcd.yaml").unlink()
    with pytest.raises(RuntimeError_, match="nothing was done"):
        svc.stop(1)
    with pytest.raises(RuntimeError_, match="nothing to start"):
        svc.start(1)


def test_static_pod_stop_not_proven_keeps_it_parked(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _manifest(manifests / "etcd.yaml")
    svc = StaticPodService("etcd", manifests / "etcd.yaml", tmp_path / "parked", FakeProof(ok=False))
    with pytest.raises(StopNotProven, match="fake: still there"):
        svc.stop(0.1)
    assert svc.is_parked() and svc.is_running()
    svc.start(1)
    assert (manifests / "etcd.yaml").exists()


# ---------------------------------------------------------------------------
# process service with small real processes and a faked proof


@pytest.fixture
def procs() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_process_sigterm_then_sigkill(tmp_path: Path, procs: list[int]) -> None:
    stubborn = [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\ntime.sleep(60)\n"]
    svc = ProcessService("stub", stubborn, tmp_path / "run" / "stub.pid", tmp_path / "logs" / "stub.log",
                         FakeProof(), kill_grace=0.3)
    svc.start(5)
    pid = svc.running_pid()
    assert pid is not None
    procs.append(pid)
    log = tmp_path / "logs" / "stub.log"
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text() and time.monotonic() < deadline:  # SIGTERM ignored from here on
        time.sleep(0.01)
    assert (tmp_path / "run" / "stub.pid").stat().st_mode & 0o777 == 0o644
    t0 = time.monotonic()
    svc.stop(5)
    assert 0.3 <= time.monotonic() - t0 < 3.0
    assert svc.last_stop is not None and svc.last_stop.signals == ("SIGTERM", "SIGKILL")
    assert not svc.is_running() and not (tmp_path / "run" / "stub.pid").exists()
    assert log.stat().st_mode & 0o777 == 0o600


def test_process_stop_not_proven_leaves_pid_file(tmp_path: Path) -> None:
    svc = ProcessService("sleeper", ["sleep", "60"], tmp_path / "p.pid", tmp_path / "l.log", FakeProof())
    svc.start(5)
    svc.stop_proof = FakeProof(ok=False)
    with pytest.raises(StopNotProven, match="fake: still there"):
        svc.stop(0.5)
    assert (tmp_path / "p.pid").exists()  # the process is gone, but the proof did not hold


def test_process_start_failures(tmp_path: Path) -> None:
    svc = ProcessService("x", [str(tmp_path / "no-such-program")], tmp_path / "p.pid", tmp_path / "l.log",
                         FakeProof())
    with pytest.raises(RuntimeError_, match="cannot run"):
        svc.start(1)
    assert not (tmp_path / "p.pid").exists()
    busy = ProcessService("x", ["sleep", "1"], tmp_path / "p.pid", tmp_path / "l.log", FakeProof(ok=False))
    with pytest.raises(RuntimeError_, match="adopt it by writing its pid"):
        busy.start(1)
    with pytest.raises(RuntimeError_, match="not adopted"):
        busy.adopt(os.getpid())


# ---------------------------------------------------------------------------
# systemd service against the stand-in systemctl


def test_systemd_calls_and_states(tmp_path: Path) -> None:
    standin = SystemctlStandin(tmp_path, {"etcd.service": {}})
    svc = SystemdService("etcd", "etcd.service", FakeProof(), systemctl=str(standin.path))
    assert not svc.is_running() and svc.state() == "inactive"
    svc.start(5)
    assert svc.is_running()
    svc.stop(5)
    assert not svc.is_running()
    verbs = [c for c in standin.calls() if c[0] in ("start", "stop")]
    assert verbs == [["start", "etcd.service"], ["stop", "etcd.service"]]
    assert "systemctl stop etcd.service" in svc.describe()


def test_systemd_daemon_reload_only_when_needed(tmp_path: Path) -> None:
    standin = SystemctlStandin(tmp_path, {"etcd.service": {"need_reload": True}})
    svc = SystemdService("etcd", "etcd.service", FakeProof(), systemctl=str(standin.path))
    svc.start(30)   # bounds only: the stand-in answers at once, but a busy machine starts its shell slowly
    svc.stop(30)
    svc.start(30)
    verbs = [c[0] for c in standin.calls() if c[0] != "show" and c[0] != "is-active"]
    assert verbs == ["daemon-reload", "start", "stop", "start"]


def test_systemd_failures(tmp_path: Path) -> None:
    standin = SystemctlStandin(tmp_path, {"etcd.service": {"fail_start": True}})
    svc = SystemdService("etcd", "etcd.service", FakeProof(ok=False), systemctl=str(standin.path))
    with pytest.raises(RuntimeError_, match=r"start etcd.service` failed \(exit 1\).*journalctl -u etcd.service"):
        svc.start(5)
    with pytest.raises(StopNotProven, match="fake: still there"):
        svc.stop(0.2)
    missing = SystemdService("etcd", "nope.service", FakeProof(), systemctl=str(standin.path))
    with pytest.raises(StopNotProven, match="exit 5"):
        missing.stop(1)
    absent = SystemdService("etcd", "etcd.service", FakeProof(), systemctl=str(tmp_path / "no-systemctl"))
    with pytest.raises(RuntimeError_, match="not found"):
        absent.start(1)


# ---------------------------------------------------------------------------
# factory


def _member(tmp_path: Path, **kw: object) -> LocalMember:
    return LocalMember(name="m1", data_dir=tmp_path / "data", endpoints=("https://127.0.0.1:2379",), **kw)  # type: ignore[arg-type]


def test_factory_static_pod_reads_apiserver_manifest(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    api = manifests / "kube-apiserver.yaml"
    api.write_text(
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n"
        "    - kube-apiserver\n    - --secure-port=7443\n    - --bind-address=0.0.0.0\n"
    )
    cfg = AgentConfig(apiserver=ApiserverSettings(manifest=api))
    member = _member(tmp_path, runtime="static-pod", manifest=manifests / "etcd.yaml")
    rt = make_runtime(cfg, member, tmp_path / "state")
    assert isinstance(rt.etcd, StaticPodService) and isinstance(rt.apiserver, StaticPodService)
    assert rt.etcd.park_dir == tmp_path / "state" / "parked-manifests"
    assert rt.etcd.manifest_path == manifests / "etcd.yaml"
    desc = rt.apiserver.describe()
    assert "127.0.0.1:7443" in desc and "no process runs the command of kube-apiserver" in desc
    assert "member/snap/db" in rt.etcd.describe() and "127.0.0.1:2379" in rt.etcd.describe()

    # after an interrupted restore the apiserver manifest is parked: its command is read from there
    rt.apiserver.park_dir.mkdir(parents=True)
    os.rename(api, rt.apiserver.parked_path)
    again = make_runtime(cfg, member, tmp_path / "state")
    assert again.apiserver is not None and "127.0.0.1:7443" in again.apiserver.describe()


def test_factory_systemd_and_process(tmp_path: Path) -> None:
    systemd = make_runtime(AgentConfig(), _member(tmp_path, runtime="systemd", unit="etcd-main.service"),
                           tmp_path / "state", systemctl="/opt/systemctl")
    assert isinstance(systemd.etcd, SystemdService)
    assert (systemd.etcd.unit, systemd.etcd.systemctl) == ("etcd-main.service", "/opt/systemctl")
    assert systemd.apiserver is None
    cfg = AgentConfig(
        etcd=EtcdSettings(runtime="process", start_command=("etcd", "--name=m1"), pid_file=tmp_path / "etcd.pid"),
        apiserver=ApiserverSettings(unit="kube-apiserver.service", health_url="https://127.0.0.1:6443/livez"),
    )
    rt = make_runtime(cfg, _member(tmp_path), tmp_path / "state", kill_grace=0.5)
    assert isinstance(rt.etcd, ProcessService)
    assert rt.etcd.log_file == tmp_path / "state" / "logs" / "etcd.log"
    assert rt.etcd.kill_grace == 0.5 and rt.etcd.pid_file == tmp_path / "etcd.pid"
    assert isinstance(rt.apiserver, SystemdService) and rt.apiserver.unit == "kube-apiserver.service"


def test_factory_refuses_unknown_runtime(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot tell how etcd is run"):
        make_runtime(AgentConfig(), _member(tmp_path), tmp_path / "state")
    with pytest.raises(ConfigError, match=r"set etcd\.manifest"):
        make_runtime(AgentConfig(etcd=EtcdSettings(runtime="static-pod")), _member(tmp_path), tmp_path / "s")
    bad = LocalMember(name="m1", data_dir=tmp_path, endpoints=("unix:///x",), runtime="systemd")
    with pytest.raises(ConfigError, match="cannot be probed"):
        make_runtime(AgentConfig(), bad, tmp_path / "state")


def test_factory_rejects_unreadable_apiserver_manifest(tmp_path: Path) -> None:
    api = tmp_path / "kube-apiserver.yaml"
    api.write_text(json.dumps({"kind": "Pod", "spec": {"containers": [{"name": "x"}]}}))
    cfg = AgentConfig(apiserver=ApiserverSettings(manifest=api))
    with pytest.raises(ConfigError, match=r"no spec\.containers"):
        make_runtime(cfg, _member(tmp_path, runtime="systemd"), tmp_path / "state")


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kubeadm"


def test_factory_watches_the_apiserver_container_not_a_sidecar_listed_first(tmp_path: Path) -> None:
    """The stop proof of a static-pod kube-apiserver follows the container named kube-apiserver."""
    api = tmp_path / "manifests" / "kube-apiserver.yaml"
    api.parent.mkdir()
    api.write_text((FIXTURES / "kube-apiserver-sidecar.yaml").read_text())
    rt = make_runtime(AgentConfig(apiserver=ApiserverSettings(manifest=api)), _member(tmp_path, runtime="systemd"),
                      tmp_path / "state")
    assert isinstance(rt.apiserver, StaticPodService) and isinstance(rt.apiserver.proof, AllOf)
    gone = [p for p in rt.apiserver.proof.proofs if isinstance(p, ProcessesGone)]
    ports = [p for p in rt.apiserver.proof.proofs if isinstance(p, PortsClosed)]
    assert len(gone) == 1 and len(ports) == 1
    assert gone[0].command[:3] == ("kube-apiserver", "--advertise-address=192.168.56.10", "--allow-privileged=true")
    assert "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key" in gone[0].command
    assert ports[0].addresses == ("127.0.0.1:6443",)  # the apiserver's --secure-port, not the sidecar's 9443
