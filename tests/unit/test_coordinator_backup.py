"""The coordinator's backup waits out an agent that is busy with its own snapshot, within [vault] timeout.

The agents are scripted through the daemon's client factory (the port it
talks to agents through); the vault is a real directory.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from etcdguard.common.base.errors import SnapshotError, UnsafeRefusal
from etcdguard.common.wire.protocol import BUSY, RemoteError
from etcdguard.common.wire.report import AgentInfo, AgentReport, EtcdHealth, MemberConfig, RestoreInfo
from etcdguard.coordinator.agents.links import AgentLink, MemberLinks
from etcdguard.coordinator.config import MemberSettings, parse_coordinator_config
from etcdguard.coordinator.daemon import CoordinatorDaemon

BODY = hashlib.shake_256(b"snapshot").digest(50_000)
DATA = BODY + hashlib.sha256(BODY).digest()
META = {"name": "snap-20261201T000000.000Z-r42.db", "size": len(DATA), "sha256": hashlib.sha256(DATA).hexdigest(),
        "revision": 42, "created_unix": 1_764_547_200.0, "cluster_id": "c1", "member_id": "m1",
        "etcd_version": "3.5.16"}


class ScriptedAgent:
    """Answers snapshot.take with BUSY ``busy`` times, then with a snapshot; serves that snapshot."""

    def __init__(self, busy: int, restore: Optional[RestoreInfo] = None) -> None:
        self.busy = busy
        self.restore = restore or RestoreInfo()
        self.takes: list[float] = []

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
             retries: Optional[int] = None, data: Optional[bytes] = None,
             request_id: Optional[str] = None) -> dict[str, Any]:
        assert op == "snapshot.take" and timeout > 0
        self.takes.append(time.monotonic())
        if len(self.takes) <= self.busy:
            raise RemoteError(BUSY, "snapshot.take is running")
        return {"snapshot": dict(META)}

    def status(self, timeout: float = 5.0, retries: Optional[int] = None) -> dict[str, Any]:
        busy = "snapshot.take" if len(self.takes) <= self.busy else None
        return AgentReport(agent=AgentInfo(version="test", busy=busy), member=MemberConfig(name="cp1", data_dir="/d"),
                           etcd=EtcdHealth(healthy=True, is_leader=True), restore=self.restore).to_json()

    def fetch_snapshot(self, name: str, dest: Path, *, expected_sha256: str, expected_size: int,
                       progress: Optional[Callable[[int, int], None]] = None, credit: int = 4,
                       chunk: int = 1 << 20, timeout: float = 30.0, zstd_level: Optional[int] = None) -> str:
        """Sends the chunks plain, as an agent from before compression does (the vault compresses them)."""
        assert (name, expected_sha256, expected_size) == (META["name"], META["sha256"], META["size"])
        dest.write_bytes(DATA)
        return ""

    def close(self) -> None:
        return None


def daemon(tmp_path: Path, agent: ScriptedAgent, timeout: str) -> CoordinatorDaemon:
    config = parse_coordinator_config({
        "coordinator": {"state_dir": str(tmp_path / "state"), "control_socket": str(tmp_path / "c.sock"),
                        "insecure": True},
        "vault": {"dir": str(tmp_path / "vault"), "timeout": timeout},
        "metrics": {"enabled": False},
        "members": [{"name": "cp1", "agent": "tcp://127.0.0.1:7479"}],
    }, "coordinator.toml")

    def factory(member: MemberSettings) -> AgentLink:
        return agent

    d = CoordinatorDaemon(None, config, client_factory=factory)
    d.vault.prepare()
    d.links = MemberLinks(config, factory)   # what run() sets up before serving requests
    return d


def test_backup_waits_while_the_agent_takes_its_own_snapshot(tmp_path: Path) -> None:
    agent = ScriptedAgent(busy=1)
    events: list[Mapping[str, Any]] = []
    result = daemon(tmp_path, agent, "60s").backup("cp1", events.append)
    assert result["entry"]["sha256"] == META["sha256"] and result["pulled"] is True
    assert len(agent.takes) == 2
    assert agent.takes[1] - agent.takes[0] >= 1.9   # waited BUSY_POLL between the attempts
    waits = [e for e in events if e.get("stage") == "wait"]
    assert [e["message"] for e in waits] == ["member cp1 is busy (snapshot.take is running); waiting"]


def test_backup_gives_up_at_the_vault_timeout(tmp_path: Path) -> None:
    agent = ScriptedAgent(busy=1000)
    started = time.monotonic()
    with pytest.raises(SnapshotError, match=r"member cp1: no snapshot within 1\.0s \(\[vault\] timeout\)"):
        daemon(tmp_path, agent, "1s").backup("cp1", lambda e: None)
    assert 1.0 <= time.monotonic() - started < 3.0
    assert len(agent.takes) == 1   # the one wait (BUSY_POLL is longer than the bound) ends at the bound


def test_backup_never_waits_on_a_restore(tmp_path: Path) -> None:
    agent = ScriptedAgent(busy=1000, restore=RestoreInfo(locked=True, last_op="op1", last_state="running",
                                                         open_ops=("op1",)))
    with pytest.raises(UnsafeRefusal, match="a restore operation is in progress on member cp1"):
        daemon(tmp_path, agent, "60s").backup("cp1", lambda e: None)
    assert len(agent.takes) == 1


def test_backup_waits_for_the_slot_and_names_what_holds_it(tmp_path: Path) -> None:
    agent = ScriptedAgent(busy=0)
    d = daemon(tmp_path, agent, "60s")
    assert d.slot.try_take("restore op1")
    events: list[Mapping[str, Any]] = []
    results: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: results.append(d.backup("cp1", events.append)))
    worker.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == [{"stage": "wait", "message": "waiting for the running operation: restore op1"}]
    assert agent.takes == [] and d.status_report()["coordinator"]["busy"] == "restore op1"
    d.slot.release()
    worker.join(10)
    assert results[0]["entry"]["sha256"] == META["sha256"] and len(agent.takes) == 1
    assert d.slot.doing is None and d.pulls.last_pull is not None and d.pulls.last_pull["member"] == "cp1"


def test_a_scheduled_pull_is_postponed_while_the_slot_is_taken(tmp_path: Path) -> None:
    agent = ScriptedAgent(busy=0)
    d = daemon(tmp_path, agent, "60s")
    assert d.slot.try_take("backup: taking a snapshot on cp1")
    assert d.pulls.pull_once() is True
    assert agent.takes == [] and d.pulls.last_pull is None and d.slot.doing == "backup: taking a snapshot on cp1"
