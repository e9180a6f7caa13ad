"""A damaged restore record never takes a daemon down (issue 9 item 6).

One corrupt ``op.json`` (a torn write, a hand edit) used to crash the agent daemon's loop. Now it is
reported by the daemon's log and metrics, by ``check``, ``restores`` and the control channel's status,
and is treated as an operation that needs attention: scheduled and requested backups wait, and no
restore starts. The coordinator reports its own damaged journals the same way. Real processes: etcd,
the agent daemon with its CURVE control server, the coordinator daemon and etcdguardctl.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from etcdguard.common.wire import protocol as P

from tests.helpers.agentconf import AGENT
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import Coordinator, lone_coordinator_config, scrape
from tests.helpers.etcd import EtcdMember
from tests.helpers.net import free_port, wait_until

TORN = b'{"event": "created", "op": "zz", "par'       # the header itself torn by a crash: nothing readable
NOT_AN_OBJECT = b"[1,2]\n"


def agent_cli(config: Path, *args: str) -> tuple[int, Any, str]:
    r = subprocess.run([*AGENT, "--config", str(config), *args, "--json"], capture_output=True, text=True,
                       timeout=120, check=False)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None, r.stderr


def damage(state_dir: Path, op: str, content: bytes) -> Path:
    path = state_dir / "operations" / op / "journal.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_corrupt_operation_record_is_reported_and_blocks_backups_and_restores(
        etcd_member: EtcdMember, tmp_path: Path) -> None:
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    port = free_port()
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path],
                         sections={"metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
                                   "backup": {"interval": "2s"}})
    agent.start()
    try:
        # A torn record appears while the daemon runs, then one that parses but is no object.
        damage(agent.state_dir, "zz", TORN)
        wait_until(lambda: "restore operation zz needs attention" in agent.log_text(), 30,
                   what="the damaged record in the log")
        damage(agent.state_dir, "zy", NOT_AN_OBJECT)
        wait_until(lambda: scrape(port).get("etcdguard_restore_records_damaged") == 2, 30,
                   what="both damaged records counted")
        assert agent.running(), agent.log_tail()
        assert scrape(port)["etcdguard_restore_in_progress"] == 1
        mark = agent.log_text().count("backup postponed")
        wait_until(lambda: agent.log_text().count("backup postponed") > mark, 30,
                   what="the scheduled backup to wait for the damaged records")
        taken = len(agent.store().list())

        with agent.client(ckeys) as client:
            with pytest.raises(P.RemoteError) as info:
                client.call("snapshot.take", timeout=30)
            assert info.value.code == P.BUSY
            report = client.status()
            assert set(report["restore"]["open_ops"]) == {"zz", "zy"}

        code, out, err = agent_cli(agent.config_path, "check")
        assert code == 1, err
        records = next(c for c in out["checks"] if c["name"] == "restore records")
        assert not records["ok"] and "operation zz" in records["detail"]
        assert "does not start with the operation's header" in records["detail"]
        assert "operation zy" in records["detail"] and "not a JSON object" in records["detail"]

        code, rows, err = agent_cli(agent.config_path, "restores")
        assert code == 0, err
        assert {r["op"]: r["state"] for r in rows} == {"zz": "damaged", "zy": "damaged"}
        text = subprocess.run([*AGENT, "--config", str(agent.config_path), "restores"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert text.returncode == 0 and "zz  damaged" in text.stdout, text.stdout + text.stderr

        code, out, err = agent_cli(agent.config_path, "restore", "latest", "--yes")
        assert code == 3, err
        assert "refusing to start a restore" in err and "operation z" in err
        assert etcd_member.healthy()
        assert len(agent.store().list()) == taken   # nothing was taken while the records are damaged
        assert "Traceback" not in agent.log_text()
    finally:
        code = agent.stop()
    assert code == 0, agent.log_tail()


def test_the_coordinator_reports_a_damaged_journal_and_refuses_new_restores(tmp_path: Path) -> None:
    port = free_port()
    journal = tmp_path / "state" / "restores" / "r-bad" / "journal.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b'{"event": "state", "state": "running"}\n[1,2]\n\xff\n')
    cfg = lone_coordinator_config(tmp_path, metrics_port=port)
    coord = Coordinator(cfg, tmp_path / "coordinator.log")
    coord.start()
    try:
        coord.wait_ready()
        rows = coord.ctl_json("restores")
        assert [(r["op"], r["state"]) for r in rows] == [("r-bad", "damaged")]
        assert "damaged" in rows[0]["error"]
        text = coord.ctl("restores")
        assert text.returncode == 0 and "r-bad" in text.stdout and "DAMAGED" in text.stdout, text.stderr
        assert scrape(port)["etcdguard_restore_journals_damaged"] == 1
        refused = coord.ctl("restore", "latest", "--yes")
        assert refused.returncode == 3, refused.stderr
        assert "r-bad" in refused.stderr
        assert "r-bad" in coord.log_tail()
    finally:
        code = coord.stop()
    assert code == 0, coord.log_tail()
