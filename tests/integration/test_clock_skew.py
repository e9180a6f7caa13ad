"""Snapshots stamped a day in the future (the clock was stepped back after they were taken) (issue 9 item 12).

Before: retention deleted the snapshot just taken, the daemon took no new one and the age read 0, so the
stale alert never fired; the vault did not pull a newer snapshot either. Now newest is by revision, the
schedule runs on the monotonic clock, the age cannot hide staleness and the future stamps are counted.
Real etcd, the real agent daemon, a real coordinator daemon with a real agent, real metrics scrapes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common.base.durations import iso_utc
from etcdguard.coordinator.vault.store import Incoming, Vault

from tests.helpers.agentconf import AGENT, agent_sections, write_agent_config
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import Coordinator, coordinator_config, scrape
from tests.helpers.etcd import EtcdMember
from tests.helpers.net import free_port, wait_until

DAY = 86400.0
ONLY_34 = pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)


def stamp_ahead(sidecar: Path, seconds: float) -> None:
    """Rewrite a sidecar's stamp as if this host's clock had been ``seconds`` ahead when it was taken."""
    data = json.loads(sidecar.read_text())
    data["created_unix"] += seconds
    data["created_at"] = iso_utc(data["created_unix"])
    sidecar.write_text(json.dumps(data))


def agent_json(cfg: Path, *args: str) -> Any:
    r = subprocess.run([*AGENT, "--config", str(cfg), *args, "--json"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@ONLY_34
def test_the_agent_keeps_the_new_snapshot_and_its_schedule(etcd_member: EtcdMember, tmp_path: Path) -> None:
    port = free_port()
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    sections["backup"].update(keep=2, interval="1h")
    sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    sections["bundle"] = {"enabled": False}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    store = SnapshotStore(tmp_path / "snapshots")
    old = []
    for i in range(2):
        etcd_member.put(f"/before/{i}", "x")
        old.append(agent_json(cfg, "snapshot"))
    for meta in old:
        stamp_ahead(Path(meta["path"] + ".json"), DAY)
    etcd_member.put("/after", "the clock was stepped back")
    log = tmp_path / "agent.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL, stderr=fh)
    try:
        # A snapshot is due at once (the newest's age is unknown), and retention keeps it.
        wait_until(lambda: [m.revision for m in store.list()][:1] == [etcd_member.revision()], 30,
                   what="a new snapshot at the current revision")
        wait_until(lambda: len(store.list()) == 2, 30, what="retention down to keep=2")
        kept = [m.revision for m in store.list()]
        assert kept == [etcd_member.revision(), old[1]["revision"]], kept   # the oldest revision went
        wait_until(lambda: scrape(port)["etcdguard_snapshots_retained"] == 2, 30, what="the metrics after retention")
        m = scrape(port)
        assert m["etcdguard_backup_last_revision"] == etcd_member.revision()
        assert 0 <= m["etcdguard_backup_age_seconds"] < 60
        assert m["etcdguard_snapshots_future_dated"] == 1
        assert "stamped" in log.read_text() and "in the future" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-3000:]
    check = agent_json(cfg, "check")
    clock = next(c for c in check["checks"] if c["name"] == "clock")
    assert not clock["ok"] and "1 snapshot(s) are stamped up to" in clock["detail"], clock
    listing = subprocess.run([*AGENT, "--config", str(cfg), "snapshots"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    assert "IN THE FUTURE" in listing


@ONLY_34
def test_the_vault_pulls_a_newer_revision_past_an_entry_stamped_in_the_future(etcd_member: EtcdMember,
                                                                             tmp_path: Path) -> None:
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agent = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path])
    assert agent.seeded is not None
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    first = Incoming.from_agent(etcd_member.name, agent.seeded.to_json())
    agent.start()
    coord = None
    try:
        def fetch(dest: Path) -> None:
            with agent.client(ckeys) as client:
                client.fetch_snapshot(first.original_name, dest, expected_sha256=first.sha256,
                                      expected_size=first.size)

        vault.pull(first, fetch)
        stamp_ahead(vault.dir / f"{first.sha256}.json", DAY)   # pulled before the coordinator's clock went back
        etcd_member.put("/after", "the clock was stepped back")
        with agent.client(ckeys) as client:
            second = client.call("snapshot.take", timeout=60)["snapshot"]
        assert second["revision"] > first.revision
        port = free_port()
        coord = Coordinator(coordinator_config(tmp_path, ckeys, [agent], port), tmp_path / "coordinator.log")
        coord.start()
        coord.wait_ready()
        # due at once (the vault's newest has no known age), and newer by revision
        wait_until(lambda: len(coord.ctl_json("snapshots")) == 2, 60, what="the newer snapshot in the vault")
        listed = coord.ctl_json("snapshots")
        assert [e["sha256"] for e in listed] == [second["sha256"], first.sha256]
        m = scrape(port)
        assert m["etcdguard_vault_last_revision"] == second["revision"]
        assert 0 <= m["etcdguard_vault_age_seconds"] < 120
        assert m["etcdguard_vault_snapshots_future_dated"] == 1
        status = coord.ctl_json("status")
        assert status["vault"]["newest"]["sha256"] == second["sha256"]
        assert status["vault"]["newest_age_seconds"] >= 0
    finally:
        if coord is not None:
            assert coord.stop() == 0, coord.log_tail()
        agent.stop()
