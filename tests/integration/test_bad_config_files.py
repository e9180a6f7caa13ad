"""Config files that cannot be read or parsed (issue 9 item 5, with items 7 and 16's config cases).

At start, every command (the agent, the coordinator daemon, etcdguardctl) exits 2 with one line naming the
file; on SIGHUP both daemons log that they kept the running config and go on working. Real processes: the
agent daemon in front of a real etcd, the coordinator daemon on its control socket, real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.agentconf import AGENT, agent_sections, write_agent_config
from tests.helpers.coordinator import DAEMON, Coordinator, lone_coordinator_config, run_ctl, scrape
from tests.helpers.etcd import EtcdMember
from tests.helpers.net import free_port, wait_until

HUGE = "x" * 5_000_000
DEEP = b"a = " + b"[" * 100_000 + b"\n"


def _bytes(raw: bytes) -> Callable[[Path, str], None]:
    def write(path: Path, section: str) -> None:
        path.write_bytes(raw)
    return write


def _in_section(line: str) -> Callable[[Path, str], None]:
    """One bad key in the section the program reads ([backup] for the agent, [vault] for the coordinator)."""
    def write(path: Path, section: str) -> None:
        path.write_text(f"[{section}]\n{line}\n")
    return write


def _directory(path: Path, section: str) -> None:
    path.mkdir()


def _fifo(path: Path, section: str) -> None:
    os.mkfifo(path)


# Each way a config file can be broken, written at a given path.
BROKEN: dict[str, Callable[[Path, str], None]] = {
    "not-utf8": _bytes(b'[backup]\ninterval = "1h"\n\xff\xfe = 1\n'),
    "directory": _directory,
    "fifo": _fifo,
    "deep-nesting": _bytes(DEEP),
    "nan-interval": _in_section("interval = nan"),
    "inf-interval": _in_section("interval = inf"),
    "overflowing-interval": _in_section(f'interval = "{"9" * 400}s"'),
    "5mb-value": _in_section(f'dir = "{HUGE}"'),
}
AGENT_SECTION, COORDINATOR_SECTION = "backup", "vault"


def assert_one_line_exit_2(r: subprocess.CompletedProcess[str], path: Path) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(path) in r.stderr
    assert len(r.stderr) < 1000, f"{len(r.stderr)} bytes of error output"


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_every_command_exits_2_on_a_broken_config(kind: str, tmp_path: Path) -> None:
    agent, coordinator = tmp_path / "agent.toml", tmp_path / "coordinator.toml"
    BROKEN[kind](agent, AGENT_SECTION)
    BROKEN[kind](coordinator, COORDINATOR_SECTION)
    for argv in ([*AGENT, "--config", str(agent), "check"], [*AGENT, "--config", str(agent), "run"],
                 [*AGENT, "snapshots", "--config", str(agent)]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert_one_line_exit_2(r, agent)
    r = subprocess.run([*DAEMON, "--config", str(coordinator)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert_one_line_exit_2(r, coordinator)
    for cmd in ("status", "restores", "backup"):
        assert_one_line_exit_2(run_ctl(cmd, "--config", str(coordinator)), coordinator)


def break_in_turn(config: Path, section: str, good: str, send_hup: Callable[[], None], log: Callable[[], str],
                  alive: Callable[[], bool]) -> None:
    """Replace ``config`` by each broken kind, SIGHUP, and wait for the refusal; the daemon must stay up."""
    for n, kind in enumerate(sorted(BROKEN), start=1):
        if config.is_dir():
            config.rmdir()
        else:
            config.unlink()
        BROKEN[kind](config, section)
        send_hup()
        wait_until(lambda n=n: log().count("reload failed, kept the running configuration") >= n, timeout=30,
                   what=f"the {kind} config to be refused")
        assert alive(), f"the daemon died on a {kind} config:\n{log()[-3000:]}"
        assert "Traceback" not in log(), log()[-3000:]
    if config.is_dir():
        config.rmdir()
    else:
        config.unlink()
    config.write_text(good)
    send_hup()
    wait_until(lambda: "configuration reloaded" in log(), timeout=30, what="the good config to be reloaded")


def test_the_agent_keeps_its_config_on_every_broken_reload(etcd_member: EtcdMember, tmp_path: Path) -> None:
    port = free_port()
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    good = cfg.read_text()
    log_path = tmp_path / "agent.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL, stderr=log_fh)
    try:
        wait_until(lambda: "agent ready" in log_path.read_text(), timeout=30, what="the agent to start")
        wait_until(lambda: scrape(port).get("etcdguard_snapshots_retained") == 1, timeout=30,
                   what="the start-up snapshot")
        break_in_turn(cfg, AGENT_SECTION, good, lambda: proc.send_signal(signal.SIGHUP), log_path.read_text,
                      lambda: proc.poll() is None)
        assert scrape(port)["etcdguard_backup_interval_seconds"] == 3600   # still serving, still the old config
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log_path.read_text()[-3000:]


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[Coordinator, Path, int]]:
    port = free_port()
    cfg = lone_coordinator_config(tmp_path, metrics_port=port)
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    coord.start()
    try:
        coord.wait_ready()
        yield coord, cfg, port
    finally:
        code = coord.stop()
        assert code == 0, coord.log_tail()


def test_the_coordinator_keeps_its_config_on_every_broken_reload(coordinator: tuple[Coordinator, Path, int]) -> None:
    coord, cfg, port = coordinator
    good = cfg.read_text()
    assert coord.proc is not None
    proc = coord.proc
    break_in_turn(cfg, COORDINATOR_SECTION, good, lambda: proc.send_signal(signal.SIGHUP),
                  lambda: coord.log_path.read_text(errors="replace"), lambda: proc.poll() is None)
    assert coord.ctl_json("snapshots") == []   # still answering on its control socket
    assert scrape(port)["etcdguard_vault_interval_seconds"] == 3600
