"""A whole cluster for restore tests: three etcd members, an agent each, a coordinator with a vault.

``RestoreRig`` starts an agent (process runtime, CURVE) in front of every
member of a harness cluster and one coordinator daemon, and gives a test the
operator's view: ``ctl`` (etcdguardctl), the journal of an operation, and
hooks to kill and restart any part. Optional stand-in kube-apiservers (one per
node, process runtime) let a test see fencing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from .agents import AgentProcess, CoordinatorKeys, stop_all
from .coordinator import Coordinator, coordinator_config, scrape
from .etcd import EtcdCluster, EtcdMember
from .net import free_port, free_server_port, wait_until
from .standins import apiserver_command, livez


class RestoreRig:
    def __init__(self, cluster: EtcdCluster, tmp_path: Path, *, apiservers: bool = False,
                 restore: Optional[dict[str, Any]] = None, agent_sections: Optional[dict[str, dict[str, Any]]] = None,
                 coordinator_sections: Optional[dict[str, dict[str, Any]]] = None,
                 runtime: str = "process",
                 member_sections: Optional[Callable[[EtcdMember], dict[str, Any]]] = None,
                 seed_agents: bool = True) -> None:
        """``runtime``: how the agents run etcd; ``member_sections``: agent config per member (static pods);
        ``seed_agents=False``: no snapshot is put in each agent's store first; each daemon then takes
        its first scheduled backup at start (a benchmark with a large data set saves that time)."""
        self.cluster = cluster
        self.tmp = tmp_path
        self.ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
        self.apiserver_ports: dict[str, int] = {}
        self.agents: list[AgentProcess] = []
        self._apiserver_procs: list[subprocess.Popen[bytes]] = []
        self._restore = {"bump_revision": 1_000_000, "fence_settle": "0.3s", "start_timeout": "60s",
                         "agent_down": "30s", **(restore or {})}
        self._agent_sections = agent_sections or {}
        self._coordinator_sections = coordinator_sections or {}   # e.g. an S3, encrypted [vault]
        self.apiservers = apiservers
        self.runtime = runtime
        self._member_sections = member_sections
        self.seed_agents = seed_agents
        self.metrics_port = free_port()
        self.coordinator: Optional[Coordinator] = None
        self._notify: Optional[socket.socket] = None
        self.notified: list[str] = []

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> RestoreRig:
        per_member: dict[str, dict[str, dict[str, Any]]] = {}
        for m in self.cluster.members:
            sections = {k: dict(v) for k, v in self._agent_sections.items()}
            if self.apiservers:
                port = free_server_port()
                self.apiserver_ports[m.name] = port
                pid_file = self.tmp / f"agent-{m.name}" / "apiserver.pid"
                pid_file.parent.mkdir(parents=True, exist_ok=True)
                cmd = apiserver_command(port)
                self._start_apiserver(cmd, pid_file, self.tmp / f"apiserver-{m.name}.log")
                sections["apiserver"] = {"start_command": cmd, "pid_file": str(pid_file),
                                         "health_url": f"http://127.0.0.1:{port}/livez"}
            if self._member_sections is not None:
                for key, value in self._member_sections(m).items():
                    sections[key] = value if isinstance(value, list) else {**sections.get(key, {}), **value}
            per_member[m.name] = sections
        self.agents = []
        try:
            for m in self.cluster.members:
                a = AgentProcess(m, self.tmp / f"agent-{m.name}", authorized=[self.ckeys.public_path],
                                 sections=per_member[m.name], runtime=self.runtime, seed=self.seed_agents)
                self.agents.append(a)
                a.start(wait=False)
            for a in self.agents:
                a.wait_serving()
        except BaseException:
            stop_all(self.agents)
            raise
        config = coordinator_config(self.tmp, self.ckeys, self.agents, self.metrics_port,
                                    extra={"restore": self._restore, **self._coordinator_sections})
        self.coordinator = Coordinator(config, self.tmp / "coordinator.log")
        self.start_coordinator()
        return self

    def _start_apiserver(self, cmd: list[str], pid_file: Path, log: Path) -> None:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._apiserver_procs.append(proc)
        pid_file.write_text(f"{proc.pid}\n")
        port = int(next(a for a in cmd if a.startswith("--secure-port=")).split("=", 1)[1])
        wait_until(lambda: livez(port), 20, what=f"stand-in kube-apiserver on {port}")

    def start_coordinator(self) -> None:
        assert self.coordinator is not None
        self.coordinator.start({"NOTIFY_SOCKET": str(self._notify_path())})
        self.coordinator.wait_ready()

    def _notify_path(self) -> Path:
        """A NOTIFY_SOCKET the coordinator reports to, as systemd's; its messages land in ``notified``."""
        path = self.tmp / "notify.sock"
        if self._notify is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.settimeout(0.2)
            self._notify = sock

            def read() -> None:
                while self._notify is not None:
                    with contextlib.suppress(OSError):
                        self.notified.append(sock.recv(65536).decode("utf-8", "replace"))
            threading.Thread(target=read, name="notify", daemon=True).start()
        return path

    def status_lines(self) -> list[str]:
        """Every STATUS= the coordinator sent systemd, in order."""
        return [line[len("STATUS="):] for m in list(self.notified) for line in m.splitlines()
                if line.startswith("STATUS=")]

    def kill_coordinator(self) -> None:
        """SIGKILL, like a crash: no journal record of the stop."""
        assert self.coordinator is not None and self.coordinator.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.coordinator.proc.pid, signal.SIGKILL)
        self.coordinator.proc.wait(10)
        self.coordinator.proc = None

    def stop(self) -> None:
        if self.coordinator is not None:
            self.coordinator.stop()
        if self._notify is not None:
            sock, self._notify = self._notify, None
            sock.close()
        stop_all(self.agents)
        for proc in self._apiserver_procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for name in self.apiserver_ports:
            pid_file = self.tmp / f"agent-{name}" / "apiserver.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)

    def __enter__(self) -> RestoreRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dump_logs(self) -> None:
        if self.coordinator is not None:
            print(f"\n[coordinator log]\n{self.coordinator.log_tail(150)}")
        for a in self.agents:
            print(f"\n[agent {a.member.name}]\n{a.log_tail(60)}")

    # -- the operator's view ---------------------------------------------------
    def ctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        assert self.coordinator is not None
        from .coordinator import run_ctl

        return run_ctl(*args, "--config", str(self.coordinator.config), timeout=timeout)

    def ctl_json(self, *args: str, expect: int = 0, timeout: float = 300) -> Any:
        r = self.ctl(*args, "--json", timeout=timeout)
        assert r.returncode == expect, f"etcdguardctl {' '.join(args)}: exit {r.returncode}\n{r.stderr}\n{r.stdout}"
        return json.loads(r.stdout)

    def backup(self) -> dict[str, Any]:
        """A fresh snapshot in the vault; its vault entry."""
        return dict(self.ctl_json("backup")["entry"])

    def spawn_ctl(self, *args: str) -> subprocess.Popen[str]:
        """etcdguardctl in the background (a restore to interrupt); its output stays in pipes."""
        assert self.coordinator is not None
        from .coordinator import CTL

        return subprocess.Popen([*CTL, *args, "--config", str(self.coordinator.config)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @property
    def state_dir(self) -> Path:
        return self.tmp / "cstate"

    def ops(self) -> list[str]:
        root = self.state_dir / "restores"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def journal(self, op: str) -> list[dict[str, Any]]:
        path = self.state_dir / "restores" / op / "journal.jsonl"
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_journal(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 120,
                     what: str = "a journal record") -> str:
        """The operation id once some operation's journal satisfies ``predicate``."""
        def check() -> Optional[str]:
            for op in self.ops():
                if predicate(self.journal(op)):
                    return op
            return None
        return wait_until(check, timeout, interval=0.02, what=what)

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)


def phase_done(phase: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda records: any(r.get("event") == "phase" and r.get("phase") == phase and r.get("status") == "done"
                               for r in records)


def step_started(phase: str, member: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda records: any(r.get("event") == "step" and r.get("phase") == phase and r.get("member") == member
                               and r.get("status") == "started" for r in records)


def state_of(records: list[dict[str, Any]]) -> Optional[str]:
    states = [r["state"] for r in records if r.get("event") == "state"]
    return states[-1] if states else None
