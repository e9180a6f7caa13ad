"""Real etcd processes for tests: builds, single members, clusters, bulk data.

Everything runs on 127.0.0.1 (or ``host="::1"``) with random free ports. Each etcd process is
started in its own session (so its own process group) and registered, so the
session fixture and an atexit hook can kill whatever a failed test left
behind. A member's ``command`` is the exact argv that started it; tests hand
it to the agent as ``start_command``, so it must work again as-is on the
existing data dir (etcd ignores ``--initial-cluster-state new`` then).
"""

from __future__ import annotations

import atexit
import base64
import concurrent.futures
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.runtime.proof import cmdline, pid_alive
from etcdguard.common.base.polling import Deadline, PollTimeout, poll, poll_until

from .net import free_server_port, wait_until
from .tls import TLSMaterial

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ETCD35_DIR = REPO_ROOT / ".cache" / "etcd-3.5" / "usr" / "bin"
INSTALL_HINT = "install them with: bash scripts/install-etcd.sh"

# Raft timing. etcd's defaults are 100 ms / 1000 ms. Half of that elects a fresh
# 3-member cluster in about a second and stays stable on 2 busy cores (measured:
# no leader changes while loading data with 8 threads next to a CPU hog).
HEARTBEAT_MS = 50
ELECTION_MS = 500
SNAPSHOT_COUNT = 100_000
QUOTA_BACKEND_BYTES = 4 * 1024**3
TERM_TIMEOUT = 15.0  # SIGTERM of a leader can take 5-9 s (it tries to hand over leadership)
ETCDCTL_TIMEOUT = 60.0

_ENV_DROP_PREFIXES = ("ETCD_", "ETCDCTL_")


def clean_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """os.environ without ETCD_*/ETCDCTL_* variables, which etcd and etcdctl would read as flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_DROP_PREFIXES)}
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------
# builds


@dataclass(frozen=True)
class EtcdBuild:
    """One set of etcd binaries the tests can run."""

    label: str  # "3.4" or "3.5"
    etcd: Path
    etcdctl: Path
    etcdutl: Optional[Path]
    version: str  # e.g. "3.5.30", from `etcd --version`

    @property
    def bin_dir(self) -> Path:
        return self.etcd.parent

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.version.split(".")[:3] if x.isdigit())

    @property
    def restore_tool(self) -> Path:
        """What restores a snapshot: etcdutl where present, else 3.4's etcdctl."""
        return self.etcdutl if self.etcdutl is not None else self.etcdctl

    @property
    def supports_bump_revision(self) -> bool:
        return self.etcdutl is not None and self.version_tuple >= (3, 5, 10)

    @property
    def test_id(self) -> str:
        return f"etcd{self.label}"


@functools.cache
def etcd_version(etcd: Path) -> Optional[str]:
    """The version `etcd --version` prints ("3.4.23"), or None if it does not run."""
    try:
        proc = subprocess.run(
            [str(etcd), "--version"], capture_output=True, text=True, timeout=30,
            env=clean_env(), check=False,
        )
    except OSError:
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return None


def _build_in(label: str, bin_dir: Path) -> Optional[EtcdBuild]:
    etcd, etcdctl, etcdutl = bin_dir / "etcd", bin_dir / "etcdctl", bin_dir / "etcdutl"
    if not (os.access(etcd, os.X_OK) and os.access(etcdctl, os.X_OK)):
        return None
    version = etcd_version(etcd)
    if version is None or not version.startswith(label + "."):
        return None
    return EtcdBuild(
        label=label,
        etcd=etcd,
        etcdctl=etcdctl,
        etcdutl=etcdutl if os.access(etcdutl, os.X_OK) else None,
        version=version,
    )


def _candidates(label: str) -> list[Path]:
    if label == "3.4":
        found = shutil.which("etcd")
        dirs = [Path(found).parent] if found else []
        return [*dirs, Path("/usr/bin")]
    if label == "3.5":
        env = os.environ.get("ETCDGUARD_ETCD35_BIN")
        return [Path(env).resolve()] if env else [DEFAULT_ETCD35_DIR]
    raise ValueError(f"unknown etcd build label {label!r} (known: 3.4, 3.5)")


BUILD_LABELS = ("3.4", "3.5")


def build_for(label: str) -> Optional[EtcdBuild]:
    """The build for ``label`` ("3.4": etcd on PATH; "3.5": $ETCDGUARD_ETCD35_BIN or .cache), or None."""
    for bin_dir in _candidates(label):
        build = _build_in(label, bin_dir)
        if build is not None:
            return build
    return None


def missing_build_reason(label: str) -> str:
    where = ", ".join(str(p) for p in _candidates(label))
    return f"etcd {label} not found (looked in {where}); {INSTALL_HINT}"


def available_builds() -> list[EtcdBuild]:
    """Every build present on this machine, 3.4 first."""
    return [b for b in (build_for(label) for label in BUILD_LABELS) if b is not None]


# ---------------------------------------------------------------------------
# process registry: nothing outlives the test session


_registry_lock = threading.Lock()
_members: list[EtcdMember] = []


def _register(member: EtcdMember) -> None:
    with _registry_lock:
        if member not in _members:
            _members.append(member)


def kill_leftovers() -> list[str]:
    """SIGKILL every etcd process a harness member started (or that serves its data dir).

    Returns the names of the members that still had a process, so a session
    fixture can report leaks.
    """
    with _registry_lock:
        members = list(_members)
    leaked = []
    for member in members:
        try:
            if member.is_running():
                leaked.append(member.name)
            member.stop(kill=True, timeout=10)
        except (OSError, RuntimeError) as exc:  # cleanup must go on with the other members
            leaked.append(f"{member.name} (cleanup error: {exc!r})")
    return leaked


atexit.register(kill_leftovers)


def _serves_data_dir(argv: list[str], data_dir: str) -> bool:
    if not argv or os.path.basename(argv[0]) != "etcd":
        return False
    for i, arg in enumerate(argv):
        if arg in (f"--data-dir={data_dir}", f"-data-dir={data_dir}"):
            return True
        if arg in ("--data-dir", "-data-dir") and i + 1 < len(argv) and argv[i + 1] == data_dir:
            return True
    return False


# ---------------------------------------------------------------------------
# errors


class EtcdStartError(RuntimeError):
    """An etcd member did not come up; the message carries the tail of its log."""


class EtcdctlError(subprocess.CalledProcessError):
    """etcdctl failed; unlike CalledProcessError, the message shows its stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}\nstderr: {err}"


# ---------------------------------------------------------------------------
# one member


class EtcdMember:
    """One etcd process on 127.0.0.1 (or ``host="::1"``): own data dir, ports and log file, optional TLS."""

    def __init__(
        self,
        build: EtcdBuild,
        base_dir: Path,
        name: str = "m1",
        tls: Optional[TLSMaterial] = None,
        client_port: Optional[int] = None,
        peer_port: Optional[int] = None,
        initial_cluster: Optional[str] = None,
        cluster_token: Optional[str] = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        election_ms: int = ELECTION_MS,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.build = build
        self.host = host
        self.name = name
        self.tls = tls
        self.dir = Path(base_dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        self.client_port = client_port or free_server_port(host)
        self.peer_port = peer_port or free_server_port(host)
        self._initial_cluster = initial_cluster
        self.cluster_token = cluster_token or f"etcdguard-test-{secrets.token_hex(4)}"
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = list(extra_args)
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log_offset = 0
        self._lock = threading.Lock()
        # registered up front: a test may have the agent start it from ``command``
        _register(self)

    def __repr__(self) -> str:
        return f"EtcdMember({self.name!r}, {self.client_url}, etcd {self.build.version}, pid={self.pid})"

    # -- addresses and argv

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url_host(self) -> str:
        """The host as it goes in a URL: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.peer_port}"

    @property
    def initial_cluster(self) -> str:
        return self._initial_cluster or f"{self.name}={self.peer_url}"

    @property
    def command(self) -> list[str]:
        """The argv that starts this member; valid again as-is once the data dir exists."""
        cmd = [
            str(self.build.etcd),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            f"--snapshot-count={SNAPSHOT_COUNT}",
            f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
            "--logger=zap",
        ]
        if self.tls is not None:
            t = self.tls
            cmd += [
                f"--cert-file={t.server_cert}",
                f"--key-file={t.server_key}",
                f"--trusted-ca-file={t.ca_cert}",
                "--client-cert-auth",
                f"--peer-cert-file={t.server_cert}",
                f"--peer-key-file={t.server_key}",
                f"--peer-trusted-ca-file={t.ca_cert}",
                "--peer-client-cert-auth",
            ]
        return cmd + self.extra_args

    # -- process control

    @property
    def pid(self) -> Optional[int]:
        """Pid of the process this harness started last (None before start())."""
        return self._proc.pid if self._proc is not None else None

    def pids(self) -> list[int]:
        """Live etcd processes serving this data dir: ours, and any started from ``command``
        by someone else (the agent's process runtime)."""
        found = []
        if self._proc is not None and self._proc.poll() is None:
            found.append(self._proc.pid)
        data_dir = str(self.data_dir)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid in found or pid == os.getpid():
                continue
            if _serves_data_dir(cmdline(pid), data_dir) and pid_alive(pid):
                found.append(pid)
        return found

    def is_running(self) -> bool:
        return bool(self.pids())

    def start(self) -> None:
        """Start etcd (detached in its own session) without waiting for it to serve."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise RuntimeError(f"{self!r} is already running")
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                log.write(f"---- harness: starting {self.name} ----\n".encode())
                log.flush()
                self._proc = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    env=clean_env(),
                    start_new_session=True,
                )

    def stop(self, kill: bool = False, timeout: float = TERM_TIMEOUT) -> None:
        """Stop every process serving this data dir and wait until it is gone.

        SIGTERM first (etcd shuts down cleanly), SIGKILL after ``timeout``
        seconds; ``kill=True`` sends SIGKILL straight away.
        """
        sig = signal.SIGKILL if kill else signal.SIGTERM
        self._signal_all(sig)
        try:
            self._wait_gone(timeout)
        except TimeoutError:
            if kill:
                raise
            self._signal_all(signal.SIGKILL)
            self._wait_gone(10.0)

    def _signal_all(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # our child, not yet reaped: its pid (= its process group) cannot have been reused
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        data_dir = str(self.data_dir)
        for pid in self.pids():
            if proc is not None and pid == proc.pid:
                continue
            if _serves_data_dir(cmdline(pid), data_dir):  # re-check right before signalling
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _wait_gone(self, timeout: float) -> None:
        deadline = Deadline(timeout)
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=deadline.remaining())
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{self.name}: etcd pid {proc.pid} still running") from None
        try:
            poll_until(lambda: not self.pids(), deadline, interval=0.02, what=f"{self.name}'s etcd to exit")
        except PollTimeout:
            raise TimeoutError(f"{self.name}: etcd pids {self.pids()} still running") from None

    def exited_code(self) -> Optional[int]:
        """Exit status of the process this harness started, None while it runs or before start."""
        return self._proc.poll() if self._proc is not None else None

    # -- health

    def _ssl_context(self) -> Optional[ssl.SSLContext]:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        ctx.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return ctx

    def healthy(self, timeout: float = 2.0) -> bool:
        """etcd's own /health: true once the member has a leader and serves reads."""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._ssl_context())
        )
        try:
            with opener.open(f"{self.client_url}/health", timeout=timeout) as resp:
                body = json.loads(resp.read().decode("utf-8", "replace"))
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health")) == "true"

    def peer_serving(self) -> bool:
        """Does the peer port answer HTTP (GET /members) yet?"""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._ssl_context())
        )
        try:
            with opener.open(f"{self.peer_url}/members", timeout=0.5) as resp:
                return int(resp.status) == 200
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_peer_serving(self, timeout: float) -> bool:
        """Poll peer_serving() until true, the process exits, or ``timeout``; returns the last answer."""
        with contextlib.suppress(PollTimeout):
            for _ in poll(timeout, interval=0.01, what=f"{self.name}'s peer URL"):
                if self.peer_serving():
                    return True
                if self._died():
                    return False
        return False

    def _log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _died(self) -> bool:
        """Did etcd fail on its own (bad flag, port taken, bad data) with nothing else serving?

        Only an exit status > 0 counts: a process killed by a signal was stopped on
        purpose (by a test or by the agent, which may be restarting it from
        ``command`` right now, possibly still between fork and exec).
        """
        if self._proc is None:
            return False
        code = self._proc.poll()
        return code is not None and code > 0 and not self.pids()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until /health says true; fail at once (with the log) if etcd exits."""

        def check() -> bool:
            if self._died():
                raise EtcdStartError(self._failure(f"exited with status {self.exited_code()}"))
            return self.healthy(timeout=1.0)

        try:
            poll_until(check, timeout, what=f"{self.name} healthy")
        except PollTimeout:
            raise EtcdStartError(self._failure(f"not healthy after {timeout:.0f}s")) from None

    def _failure(self, what: str) -> str:
        return f"etcd {self.build.version} member {self.name} ({self.client_url}) {what}\n{self.log_tail()}"

    def bind_failed(self) -> bool:
        """Did the last start fail because a port was taken?"""
        return "address already in use" in self._log_since_start()

    def launch(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """start() + wait_healthy() for a fresh member, retrying on new ports if one was taken."""
        for attempt in range(attempts):
            self.start()
            try:
                self.wait_healthy(timeout)
                return
            except EtcdStartError:
                if attempt + 1 == attempts or not self.bind_failed():
                    self.stop(kill=True)
                    raise
                self.stop(kill=True)
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.client_port, self.peer_port = free_server_port(self.host), free_server_port(self.host)
                self._initial_cluster = None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of etcd's log, for assertion messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # -- etcdctl

    def tls_args(self) -> list[str]:
        return self.tls.etcdctl_args() if self.tls is not None else []

    def etcdctl_env_args(self) -> list[str]:
        """Connection flags for etcdctl (and `etcdguard-agent snapshot`): endpoint and TLS files."""
        return [f"--endpoints={self.client_url}", *self.tls_args()]

    def etcdctl(
        self, *args: str, check: bool = True, input: Optional[str] = None, timeout: float = ETCDCTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run this build's etcdctl (API v3) against this member."""
        return run_etcdctl(self.build, [*self.etcdctl_env_args(), *args], check=check, input=input,
                           timeout=timeout)

    def put(self, key: str, value: str) -> None:
        # the value goes through stdin, so it may start with "-" or hold newlines
        self.etcdctl("put", key, input=value)

    def get(self, key: str) -> Optional[str]:
        out = json.loads(self.etcdctl("get", key, "-w", "json").stdout)
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode("utf-8")

    def status(self) -> dict[str, Any]:
        """`endpoint status -w json` of this member: header, leader, version, dbSize..."""
        out = json.loads(self.etcdctl("endpoint", "status", "-w", "json").stdout)
        status: dict[str, Any] = out[0]["Status"]
        return status

    def revision(self) -> int:
        return int(self.status()["header"]["revision"])

    def member_id(self) -> int:
        return int(self.status()["header"]["member_id"])

    def hashkv(self, rev: int = 0) -> int:
        """`endpoint hashkv` at ``rev`` (0: the latest revision)."""
        out = json.loads(self.etcdctl("endpoint", "hashkv", f"--rev={rev}", "-w", "json").stdout)
        return int(out[0]["HashKV"]["hash"])


def run_etcdctl(
    build: EtcdBuild,
    args: Sequence[str],
    check: bool = True,
    input: Optional[str] = None,
    timeout: float = ETCDCTL_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``build``'s etcdctl with ETCDCTL_API=3 and a clean environment."""
    argv = [str(build.etcdctl), *args]
    proc = subprocess.run(
        argv,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env({"ETCDCTL_API": "3"}),
        check=False,
    )
    if check and proc.returncode != 0:
        raise EtcdctlError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def snapshot_status(build: EtcdBuild, path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`snapshot status -w json` of a file with ``build``'s etcdutl (etcdctl only on 3.4, which has no etcdutl),
    as the agent runs it: etcd 3.6 has no `etcdctl snapshot status`."""
    argv = [str(build.restore_tool), "snapshot", "status", str(path), "-w", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=ETCDCTL_TIMEOUT,
                          env=clean_env({"ETCDCTL_API": "3"}), check=False)
    if check and proc.returncode != 0:
        raise EtcdctlError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def snapshot_status_json(build: EtcdBuild, path: Path) -> dict[str, Any]:
    """The JSON object of `snapshot status -w json` (etcdctl 3.5 prints a deprecation line before it)."""
    out = snapshot_status(build, path).stdout
    parsed: dict[str, Any] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
    return parsed


# ---------------------------------------------------------------------------
# clusters


class EtcdCluster:
    """``size`` members with one initial cluster and token, started together."""

    def __init__(
        self,
        build: EtcdBuild,
        base_dir: Path,
        size: int = 3,
        tls: Optional[TLSMaterial] = None,
        name_prefix: str = "m",
        **member_kwargs: Any,
    ) -> None:
        self.build = build
        self.base_dir = Path(base_dir)
        self.tls = tls
        self.members = [
            EtcdMember(build, self.base_dir / f"{name_prefix}{i + 1}", name=f"{name_prefix}{i + 1}",
                       tls=tls, **member_kwargs)
            for i in range(size)
        ]
        self._assign(secrets.token_hex(4))

    def _assign(self, token_suffix: str) -> None:
        token = f"etcdguard-test-{token_suffix}"
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m._initial_cluster = initial
            m.cluster_token = token

    def __repr__(self) -> str:
        return f"EtcdCluster(etcd {self.build.version}, {self.endpoints})"

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    @property
    def initial_cluster(self) -> str:
        return self.members[0].initial_cluster

    @property
    def cluster_token(self) -> str:
        return self.members[0].cluster_token

    def member(self, name: str) -> EtcdMember:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def start(self) -> None:
        """Start every member without waiting for health.

        On fresh data dirs each member first asks its peers whether it is
        already part of a cluster, waiting up to 1 s for each peer that has
        bound its port but does not serve yet. Starting the members one after
        another, each once the previous one serves its peer port (tens of ms),
        avoids those waits and halves the time to a healthy cluster. Members
        with data (a restart) boot in parallel.
        """
        for m in self.members:
            fresh = not m.data_dir.exists()
            m.start()
            if fresh:
                m.wait_peer_serving(timeout=5.0)

    def etcdctl(self, *args: str, check: bool = True, input: Optional[str] = None,
                timeout: float = ETCDCTL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """etcdctl against all members' endpoints."""
        tls = self.tls.etcdctl_args() if self.tls is not None else []
        return run_etcdctl(self.build, [f"--endpoints={self.endpoints}", *tls, *args], check=check,
                           input=input, timeout=timeout)

    def statuses(self, members: Optional[Sequence[EtcdMember]] = None) -> dict[str, dict[str, Any]]:
        """`endpoint status` of each reachable member (one etcdctl call), by member name."""
        members = list(members) if members is not None else self.members
        by_url = {m.client_url: m.name for m in members}
        tls = self.tls.etcdctl_args() if self.tls is not None else []
        proc = run_etcdctl(self.build, [f"--endpoints={','.join(by_url)}", *tls, "endpoint", "status",
                                        "-w", "json"], check=False)
        out: dict[str, dict[str, Any]] = {}
        try:
            rows = json.loads(proc.stdout) if proc.stdout.strip() else []
        except ValueError:
            rows = []
        for row in rows:
            name = by_url.get(row.get("Endpoint", ""))
            if name is not None:
                out[name] = row["Status"]
        return out

    def _leader_name(self, members: Optional[Sequence[EtcdMember]] = None) -> Optional[str]:
        members = list(members) if members is not None else self.members
        statuses = self.statuses(members)
        if len(statuses) != len(members):
            return None
        # etcdctl's JSON leaves out zero fields: no "leader" means this member knows none
        leaders = {int(s.get("leader", 0)) for s in statuses.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        (leader_id,) = leaders
        for name, s in statuses.items():
            if int(s["header"]["member_id"]) == leader_id:
                return name
        return None

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The member all running members agree is leader (waits up to ``timeout``)."""
        running = [m for m in self.members if m.is_running()]
        name = wait_until(lambda: self._leader_name(running), timeout, interval=0.1,
                          what=f"one leader agreed on by {[m.name for m in running]}")
        return self.member(name)

    def wait_healthy(self, timeout: float = 30.0, members: Optional[Sequence[EtcdMember]] = None) -> None:
        """Every member healthy and all agreeing on one leader."""
        members = list(members) if members is not None else self.members

        def check() -> bool:
            for m in members:
                if m._died():
                    raise EtcdStartError(m._failure(f"exited with status {m.exited_code()}"))
            # leader agreement first: `endpoint status` answers at once, while /health on a
            # member without a leader blocks until its timeout
            return self._leader_name(members) is not None and all(m.healthy(timeout=1.0) for m in members)

        try:
            poll_until(check, timeout, what="one leader and every member healthy")
        except PollTimeout:
            tails = "\n".join(m._failure("") for m in members if not m.healthy())
            raise EtcdStartError(f"cluster {self.endpoints} not healthy with one leader after "
                                 f"{timeout:.0f}s\n{tails}") from None

    def launch(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """start() + wait_healthy() for a fresh cluster, retrying on new ports if one was taken."""
        for attempt in range(attempts):
            self.start()
            try:
                self.wait_healthy(timeout)
                return
            except EtcdStartError:
                self.stop_all(kill=True)
                if attempt + 1 == attempts or not any(m.bind_failed() for m in self.members):
                    raise
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
                    m.client_port, m.peer_port = free_server_port(m.host), free_server_port(m.host)
                self._assign(secrets.token_hex(4))

    def stop_all(self, kill: bool = True, timeout: float = TERM_TIMEOUT) -> None:
        """Stop all members in parallel (SIGKILL by default: a cluster's SIGTERM takes seconds)."""
        _parallel([functools.partial(m.stop, kill=kill, timeout=timeout) for m in self.members])

    def hashkvs(self, rev: int = 0) -> dict[str, int]:
        """`endpoint hashkv` of every member at ``rev`` (0: each member's latest), by name."""
        return {m.name: m.hashkv(rev) for m in self.members}


def _parallel(calls: Sequence[Callable[[], None]]) -> None:
    """Run calls in threads; raise the first error after all of them finished."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(c) for c in calls]
        errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise err


# ---------------------------------------------------------------------------
# bulk data


def value_for(index: int, size: int, seed: int = 0) -> bytes:
    """The deterministic random value ``load_data`` writes for key number ``index``."""
    return random.Random(seed * 1_000_003 + index).randbytes(size)


def plan_sizes(total_bytes: int, value_size: tuple[int, int], seed: int = 0) -> list[int]:
    """Value sizes, uniformly drawn from ``value_size``, adding up to at least ``total_bytes``."""
    lo, hi = value_size
    if not 0 < lo <= hi:
        raise ValueError(f"value_size must be (min, max) with 0 < min <= max, got {value_size}")
    rng = random.Random(seed)
    sizes: list[int] = []
    total = 0
    while total < total_bytes:
        size = rng.randint(lo, hi)
        sizes.append(size)
        total += size
    return sizes


def etcd3_client(member: EtcdMember, timeout: float = 60.0) -> Any:
    """A python-etcd3 client for ``member`` (TLS with the client certificate when the member has TLS)."""
    import etcd3

    kwargs: dict[str, Any] = {"host": member.url_host, "port": member.client_port, "timeout": timeout,
                              # never route loopback through an http(s)_proxy from the environment
                              "grpc_options": [("grpc.enable_http_proxy", 0)]}
    if member.tls is not None:
        kwargs.update(ca_cert=str(member.tls.ca_cert), cert_key=str(member.tls.client_key),
                      cert_cert=str(member.tls.client_cert))
    return etcd3.client(**kwargs)


MAX_BATCH_OPS = 64  # etcd refuses transactions with more than --max-txn-ops (default 128)


def plan_batches(sizes: Sequence[int], batch_bytes: int) -> list[list[int]]:
    """Group key indexes into transactions of at most ``batch_bytes`` of values
    (and MAX_BATCH_OPS keys); ``batch_bytes <= 0`` means one put per key."""
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes):
        if current and (batch_bytes <= 0 or current_bytes + size > batch_bytes or len(current) >= MAX_BATCH_OPS):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


def load_data(
    member: EtcdMember,
    total_bytes: int,
    value_size: tuple[int, int] = (10_000, 100_000),
    threads: int = 8,
    prefix: str = "/registry/bench/",
    seed: int = 0,
    batch_bytes: int = 1_000_000,
) -> int:
    """Write keys ``{prefix}{i:08d}`` with random values until ``total_bytes`` of values
    are stored; return the number of keys. Key i holds ``value_for(i, size, seed)``.

    Puts are grouped into transactions of about ``batch_bytes`` (one revision
    each), which loads a 3-member cluster 2-3x faster than single puts; pass
    ``batch_bytes=0`` for one put (and one revision) per key.
    """
    sizes = plan_sizes(total_bytes, value_size, seed)
    batches = plan_batches(sizes, batch_bytes)
    local = threading.local()
    clients: list[Any] = []
    clients_lock = threading.Lock()

    def client() -> Any:
        c = getattr(local, "client", None)
        if c is None:
            c = etcd3_client(member)
            local.client = c
            with clients_lock:
                clients.append(c)
        return c

    def write(batch: list[int]) -> None:
        c = client()
        puts = [(f"{prefix}{i:08d}", value_for(i, sizes[i], seed)) for i in batch]
        if len(puts) == 1:
            c.put(*puts[0])
        else:
            c.transaction(compare=[], success=[c.transactions.put(k, v) for k, v in puts], failure=[])

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        for future in [pool.submit(write, batch) for batch in batches]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in clients:
            c.close()
    return len(sizes)
