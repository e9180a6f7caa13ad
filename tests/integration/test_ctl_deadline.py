"""etcdguardctl never hangs on a stopped coordinator, and a long backup is not cut short (issue 9 item 15).

The daemon answers every request at once and sends heartbeats while it works, so etcdguardctl waits at
most ``[coordinator] control_timeout`` for each line. Real processes: the coordinator daemon (stopped with
SIGSTOP, and always continued), a real agent whose etcd is reached through a throttling proxy so that its
snapshot takes longer than the deadline.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import Coordinator, coordinator_config, lone_coordinator_config, run_ctl
from tests.helpers.etcd import EtcdMember
from tests.helpers.net import free_port
from tests.helpers.proxy import SlowProxy

DEADLINE = 5.0


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    cfg = lone_coordinator_config(tmp_path, coordinator={"control_timeout": f"{DEADLINE:g}s"})
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    coord.start()
    try:
        coord.wait_ready()
        yield coord
    finally:
        if coord.proc is not None and coord.proc.poll() is None:
            os.killpg(coord.proc.pid, signal.SIGCONT)   # never leave a stopped daemon behind
        assert coord.stop() == 0, coord.log_tail()


def test_a_stopped_coordinator_is_an_error_within_the_deadline(coordinator: Coordinator) -> None:
    assert coordinator.proc is not None
    os.killpg(coordinator.proc.pid, signal.SIGSTOP)
    try:
        for cmd in ("status", "restores"):
            started = time.monotonic()
            r = coordinator.ctl(cmd)
            took = time.monotonic() - started
            assert r.returncode == 1, (cmd, r.returncode, r.stderr)
            assert "Traceback" not in r.stderr
            assert f"sent nothing for {DEADLINE:g}s" in r.stderr and "stopped or hung" in r.stderr, r.stderr
            assert str(coordinator.config.parent / "run" / "c.sock") in r.stderr
            assert DEADLINE <= took < DEADLINE + 15, took
    finally:
        os.killpg(coordinator.proc.pid, signal.SIGCONT)
    assert coordinator.ctl_json("snapshots") == []   # continued, it answers again


def test_control_timeout_has_a_floor(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[coordinator]\ncontrol_timeout = "1s"\n')
    r = run_ctl("status", "--config", str(cfg))
    assert r.returncode == 2 and "coordinator.control_timeout: expected a duration of at least 5s" in r.stderr


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_backup_longer_than_the_deadline_is_kept_alive_by_heartbeats(etcd_member: EtcdMember,
                                                                       tmp_path: Path) -> None:
    big = "x" * 100_000
    for i in range(60):
        etcd_member.put(f"/bulk/{i}", big)
    proxy = SlowProxy(etcd_member.client_port, 700_000)   # ~6 MB: the agent's snapshot takes ~9 s
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path],
                         etcd_endpoint=f"http://127.0.0.1:{proxy.port}")
    coord = Coordinator(coordinator_config(tmp_path, ckeys, [agent], free_port(),
                                           extra={"coordinator": {"control_timeout": f"{DEADLINE:g}s"}}),
                        tmp_path / "coordinator.log")
    try:
        agent.start()
        coord.start()
        coord.wait_ready()
        etcd_member.put("/after-the-seed", "new data")   # a new revision: the backup's snapshot is pulled
        started = time.monotonic()
        result = coord.ctl_json("backup")
        took = time.monotonic() - started
        assert took > 2 * DEADLINE, f"the backup took {took:.1f}s: not longer than the deadline, proves nothing"
        assert result["member"] == etcd_member.name and result["pulled"] is True
    finally:
        coord.stop()
        agent.stop()
        proxy.close()
