"""etcdguard_etcd_up follows etcd between snapshots: the agent's health probe (every 15 s) sets it
to 0 soon after etcd dies and back to 1 once it serves again, with no snapshot in between."""

from __future__ import annotations

import time
import urllib.request

import pytest
from etcdguard.agent.etcd.health import INTERVAL, MAX_TIMEOUT

from tests.helpers.agents import AgentProcess
from tests.helpers.net import free_port, wait_until

# a probe is at most INTERVAL away, and takes at most MAX_TIMEOUT; the rest is slack for a busy machine
BOUND = INTERVAL + MAX_TIMEOUT + 10.0


def etcd_up(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("etcdguard_etcd_up "):
            return float(line.split()[1])
    raise AssertionError("no etcdguard_etcd_up in the agent's metrics")


@pytest.mark.slow
@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_etcd_up_follows_etcd_between_snapshots(etcd_member, tmp_path):
    port = free_port()
    agent = AgentProcess(etcd_member, tmp_path / "agent", insecure=True, write_keys=False,
                         sections={"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"}})
    agent.start()
    try:
        assert etcd_up(port) == 1
        snapshots = [m.name for m in agent.store().list()]
        etcd_member.stop(kill=True)
        died = time.monotonic()
        wait_until(lambda: etcd_up(port) == 0, BOUND, interval=0.5, what="etcdguard_etcd_up to drop to 0")
        assert time.monotonic() - died < BOUND
        assert "etcd at " in agent.log_text() and "is down" in agent.log_text()
        etcd_member.start()
        etcd_member.wait_healthy()
        wait_until(lambda: etcd_up(port) == 1, BOUND, interval=0.5, what="etcdguard_etcd_up back to 1")
        assert "is up again" in agent.log_text()
        assert [m.name for m in agent.store().list()] == snapshots   # no snapshot was taken meanwhile
    finally:
        agent.stop()
