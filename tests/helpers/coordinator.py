"""The coordinator daemon as a subprocess for tests, its config, etcdguardctl and metrics scrapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.addresses import format_host_port

from .agentconf import render_toml
from .net import wait_until

CTL = [sys.executable, "-m", "etcdguard.coordinator.ctl"]
DAEMON = [sys.executable, "-m", "etcdguard.coordinator.daemon_cli"]


def run_ctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, *args], check=False, capture_output=True, text=True, timeout=timeout)


class Coordinator:
    """etcdguard-coordinator as a subprocess, with its log in a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self, env: Optional[dict[str, str]] = None) -> None:
        """Start the daemon (a new session, so a test can SIGKILL it and everything it started)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*DAEMON, "--config", str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(*args, "--config", str(self.config))

    def ctl_json(self, *args: str) -> Any:
        r = self.ctl(*args, "--json")
        assert r.returncode == 0, f"etcdguardctl {' '.join(args)}: {r.returncode}\n{r.stderr}\n{self.log_tail()}"
        return json.loads(r.stdout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"coordinator exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.ctl("snapshots", "--json").returncode == 0
        wait_until(answers, timeout, interval=0.1, what="the coordinator's control socket")

    def stop(self, timeout: float = 40.0) -> Optional[int]:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        return proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def coordinator_config(tmp_path: Path, ckeys: Any, agents: list[Any], metrics_port: int,
                       extra: Optional[dict[str, dict[str, Any]]] = None) -> Path:
    run = tmp_path / "run"
    run.mkdir(mode=0o750, exist_ok=True)
    cfg = tmp_path / "coordinator.toml"
    sections: dict[str, dict[str, Any]] = {
        "coordinator": {"state_dir": str(tmp_path / "cstate"), "control_socket": str(run / "coordinator.sock"),
                        "secret_key": str(ckeys.secret_path), "request_timeout": "2s"},
        "vault": {"dir": str(tmp_path / "vault"), "interval": "1h", "keep": 10, "timeout": "2m"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        # continuous backup is on by default in the product; tests of other parts leave it off (its capture
        # takes a full snapshot at start and after every restore), and its own tests turn it on
        "continuous": {"enabled": False},
        # no restore drills unless a test asks (extra={"drill": {"enabled": True}}): each would start a
        # scratch etcd beside what the test measures
        "drill": {"enabled": False},
    }
    for name, keys in (extra or {}).items():
        sections.setdefault(name, {}).update(keys)
    text = render_toml(sections)
    for a in agents:
        text += (f'[[members]]\nname = "{a.member.name}"\nagent = "{a.endpoint}"\n'
                 f'public_key = "{a.key_dir / "agent.key"}"\n\n')
    cfg.write_text(text)
    return cfg


def lone_coordinator_config(tmp_path: Path, metrics_port: Optional[int] = None,
                            coordinator: Optional[dict[str, Any]] = None, metrics_host: str = "127.0.0.1") -> Path:
    """An insecure coordinator whose one member's agent never answers (tcp://127.0.0.1:9).

    For tests of the daemon and etcdguardctl themselves: config, deadlines, damaged state.
    Without ``metrics_port`` the metrics endpoint is off.
    """
    run = tmp_path / "run"
    run.mkdir(mode=0o750, exist_ok=True)
    sections: dict[str, dict[str, Any]] = {
        "coordinator": {"state_dir": str(tmp_path / "state"), "insecure": True,
                        "control_socket": str(run / "c.sock"), "request_timeout": "1s", **(coordinator or {})},
        "vault": {"dir": str(tmp_path / "vault")},
        "metrics": {"listen": f"{format_host_port(metrics_host, metrics_port)}"} if metrics_port
        else {"enabled": False},
        "members": [{"name": "m1", "agent": "tcp://127.0.0.1:9"}],
        "continuous": {"enabled": False},
        "drill": {"enabled": False},
    }
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(render_toml(sections))
    return cfg


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
            out.setdefault(name.split("{", 1)[0], float(value))   # the vault's series carry one backend label
    return out
