"""Real agent daemons for tests: CURVE keys, config, subprocess, readiness, cleanup.

``AgentProcess`` runs ``python -m etcdguard.agent --config C run`` for one
harness etcd member, with its control server on a free port of the member's
loopback address (127.0.0.1, or ::1 for a member on ``host="::1"``) and
its own key pair; ``start_agents`` does that for every member of a cluster.
``CoordinatorKeys`` is the coordinator's key pair whose public half goes into
each agent's ``authorized_keys``; ``client_for`` builds an AgentClient for it.

Each agent gets one snapshot in its store before it starts (``seed=True``):
the daemon then has no backup due, so nothing it does on its own changes
its store during a test, and there is a snapshot to fetch at once.

Every process is registered and killed at interpreter exit if a test left
it running; ``stop_all`` is the normal cleanup.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.config import load_agent_config
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common.base.polling import PollTimeout, poll_until
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.wire import keys
from etcdguard.coordinator.agents.client import AgentClient

from .agentconf import AGENT, adopt, agent_sections, write_agent_config
from .etcd import EtcdCluster, EtcdMember, clean_env
from .net import free_server_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

_lock = threading.Lock()
_running: list[AgentProcess] = []


def _kill_leftovers() -> None:
    with _lock:
        left = list(_running)
    for agent in left:
        with contextlib.suppress(OSError):
            agent.kill()


atexit.register(_kill_leftovers)


@dataclass(frozen=True)
class CoordinatorKeys:
    """A coordinator's CURVE key pair (files and Z85 keys)."""

    public_path: Path
    secret_path: Path
    public: bytes
    secret: bytes

    @classmethod
    def create(cls, directory: Path, name: str = "coordinator") -> CoordinatorKeys:
        public_path, secret_path = keys.generate(name, directory)
        public, secret = keys.load_keypair(secret_path)
        return cls(public_path, secret_path, public, secret)


class AgentProcess:
    """One agent daemon (a subprocess) serving one harness etcd member."""

    def __init__(
        self,
        member: EtcdMember,
        workdir: Path,
        *,
        authorized: Sequence[Path] = (),
        insecure: bool = False,
        runtime: Optional[str] = "process",
        port: Optional[int] = None,
        etcd_endpoint: Optional[str] = None,
        seed: bool = True,
        sections: Optional[dict[str, dict[str, Any]]] = None,
        write_keys: bool = True,
    ) -> None:
        """``authorized``: coordinator public .key files to admit; ``etcd_endpoint``: where the agent
        reaches etcd (a proxy, say; default the member); ``sections``: config keys to override."""
        self.member = member
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = member.host
        self.port = port or free_server_port(self.host)
        self.endpoint = f"tcp://{member.url_host}:{self.port}"
        self.insecure = insecure
        self.log_path = self.workdir / "agent.log"
        self.key_dir = self.workdir / "keys"
        self.authorized_dir = self.key_dir / "authorized"
        self.public_key: Optional[bytes] = None
        if write_keys:
            _, secret_path = keys.generate("agent", self.key_dir)
            self.public_key, _ = keys.load_keypair(secret_path)
            self.authorized_dir.mkdir(mode=0o700, exist_ok=True)
            for path in authorized:
                self.authorize(path)
        conf = agent_sections(member, self.workdir, runtime=runtime)
        conf["server"] = {
            "listen": self.endpoint,
            "secret_key": str(self.key_dir / "agent.key_secret"),
            "authorized_keys": str(self.authorized_dir),
            "insecure": insecure,
        }
        for name, keys_ in (sections or {}).items():
            if isinstance(keys_, list):
                conf[name] = keys_          # an array of tables ([[restart]])
            else:
                conf.setdefault(name, {}).update(keys_)
        real = dict(conf["etcd"])
        if etcd_endpoint is not None:
            conf["etcd"]["endpoints"] = [etcd_endpoint]
        self.sections = conf
        self.config_path = write_agent_config(self.workdir / "agent.toml", conf)
        if runtime == "process":
            adopt(member, self.workdir / "etcd.pid")
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self.seeded: Optional[SnapshotMeta] = None
        if seed:
            self.seeded = self.seed_snapshot(real)

    # -- files ---------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        return Path(self.sections["backup"]["dir"])

    @property
    def state_dir(self) -> Path:
        return Path(self.sections["state"]["dir"])

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    def store(self) -> SnapshotStore:
        return SnapshotStore(self.store_dir)

    def authorize(self, public_key_file: Path) -> Path:
        """Admit a coordinator: copy its public .key file into authorized_keys."""
        target = self.authorized_dir / Path(public_key_file).name
        shutil.copyfile(public_key_file, target)
        return target

    def seed_snapshot(self, etcd_section: Optional[dict[str, Any]] = None) -> SnapshotMeta:
        """Take one snapshot into the agent's store, in this process, straight from the member."""
        conf = {**self.sections, "etcd": dict(etcd_section or self.sections["etcd"])}
        path = write_agent_config(self.workdir / "seed.toml", conf)
        config = load_agent_config(path)
        runner = BackupRunner(config, discover(config), AgentMetrics())
        runner.store.prepare()
        return runner.run_once()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- process -------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        if self.running():
            raise RuntimeError(f"agent for {self.member.name} is already running")
        with open(self.log_path, "ab") as log:
            log.write(f"---- test harness: starting agent for {self.member.name} ----\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*AGENT, "--config", str(self.config_path), "run"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=clean_env({"PYTHONUNBUFFERED": "1"}), start_new_session=True,
            )
        with _lock:
            if self not in _running:
                _running.append(self)
        if wait:
            self.wait_serving(timeout)

    def port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        """Until the control port accepts connections and the daemon logged it is ready."""

        def serving() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"agent for {self.member.name} exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            return self.port_open() and "agent ready" in self.log_text().rsplit("---- test harness", 1)[-1]

        try:
            poll_until(serving, timeout, what=f"the agent for {self.member.name}")
        except PollTimeout:
            raise TimeoutError(f"agent for {self.member.name} not serving on {self.endpoint} after "
                               f"{timeout:.0f}s:\n{self.log_tail()}") from None

    def wait_exit(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget()
        return proc.returncode

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self._forget()

    def _forget(self) -> None:
        with _lock:
            if self in _running:
                _running.remove(self)

    def rss_kb(self, field: str = "VmRSS") -> Optional[int]:
        """VmRSS (or VmHWM) of the agent process in kB, None once it is gone."""
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    # -- clients -------------------------------------------------------------
    def client(self, coordinator: Optional[CoordinatorKeys], **kwargs: Any) -> AgentClient:
        """An AgentClient for this agent with ``coordinator``'s keys (None: insecure)."""
        if coordinator is None:
            return AgentClient(self.member.name, self.endpoint, server_public_key=None, client_public=None,
                               client_secret=None, insecure=True, **kwargs)
        return AgentClient(self.member.name, self.endpoint, server_public_key=self.public_key,
                           client_public=coordinator.public, client_secret=coordinator.secret, **kwargs)


def start_agents(
    members: EtcdCluster | Sequence[EtcdMember],
    base_dir: Path,
    coordinator: Optional[CoordinatorKeys],
    **kwargs: Any,
) -> list[AgentProcess]:
    """One started agent per member (CURVE, admitting ``coordinator``; insecure when it is None).

    Their endpoints and public keys are ``agent.endpoint`` and ``agent.public_key``.
    On a failure the agents already started are stopped again.
    """
    group = members.members if isinstance(members, EtcdCluster) else list(members)
    agents: list[AgentProcess] = []
    try:
        for member in group:
            agent = AgentProcess(
                member, Path(base_dir) / f"agent-{member.name}",
                authorized=[coordinator.public_path] if coordinator is not None else (),
                insecure=coordinator is None, **kwargs)
            agents.append(agent)
            agent.start(wait=False)
        for agent in agents:
            agent.wait_serving()
    except BaseException:
        stop_all(agents)
        raise
    return agents


def stop_all(agents: Sequence[AgentProcess]) -> None:
    for agent in agents:
        with contextlib.suppress(OSError, RuntimeError):
            agent.kill() if not agent.running() else agent.stop()


@contextlib.contextmanager
def running_agents(members: EtcdCluster | Sequence[EtcdMember], base_dir: Path,
                   coordinator: Optional[CoordinatorKeys], **kwargs: Any) -> Iterator[list[AgentProcess]]:
    """start_agents() for a with-block; the agents are stopped when it ends."""
    agents = start_agents(members, base_dir, coordinator, **kwargs)
    try:
        yield agents
    finally:
        stop_all(agents)


def op_journal(state_dir: Path, op: str) -> list[dict[str, Any]]:
    """The records of one of an agent's operation journals (``<state>/operations/<op>/journal.jsonl``)."""
    path = state_dir / "operations" / op / "journal.jsonl"
    if not path.exists():
        return []
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def op_header(state_dir: Path, op: str) -> dict[str, Any]:
    """The ``created`` record of an agent's operation: its kind, parameters, checks."""
    records = op_journal(state_dir, op)
    assert records and records[0]["event"] == "created", records[:1]
    return records[0]


def steps_done(state_dir: Path, op: str) -> list[str]:
    """The steps an agent's operation journal records as done, in order (repeats included)."""
    return [r["step"] for r in op_journal(state_dir, op) if r["event"] == "step" and r.get("status") == "done"]
