"""What `etcdguardctl status` says when the cluster loses quorum: measured now, never a stale "healthy".

Three members with an agent each and a coordinator. Two etcd members are
SIGKILLed; two seconds later the operator's status must show no member
healthy and the quorum lost (the survivor is up without a leader, the others
down), although a status asked moments before the kill left a healthy answer
in every agent's cache. With one agent process also stopped, status still
answers within about two seconds and names the agent that did not answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import seed
from tests.helpers.agents import CoordinatorKeys
from tests.helpers.etcd import EtcdCluster
from tests.helpers.restore_rig import RestoreRig

pytestmark = pytest.mark.slow

# seconds for the whole `etcdguardctl status`: the 1.5 s survey deadline, the daemon's own work and the
# CLI's start (about 0.35 s here); measured 1.9-2.2 s with an agent down, 0.4-0.6 s otherwise, up to 3.1 s
# with the test suite running beside it. The bound only tells that from waiting out an agent's 5 s request
# timeout (what status did before), not how fast it is: that is the benchmarks' job.
STATUS_WITHIN = 4.5
INSPECT_WITHIN = 3.0    # seconds for etcd.inspect of a member without quorum or without etcd (was 5 s)


def timed_status(rig: RestoreRig, *args: str) -> tuple[float, Any]:
    started = time.monotonic()
    r = rig.ctl("status", *args, timeout=60)
    took = time.monotonic() - started
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    return took, (json.loads(r.stdout) if "--json" in args else r.stdout)


def test_status_after_two_members_are_killed_says_quorum_lost_at_once(etcd_cluster3: EtcdCluster,
                                                                     tmp_path: Path) -> None:
    cluster = etcd_cluster3
    seed(cluster)
    rig = RestoreRig(cluster, tmp_path)
    try:
        rig.start()
        # a status first: every agent's probe now holds a healthy answer
        _, before = timed_status(rig, "--json")
        assert all(m["healthy"] for m in before["members"]), before["members"]
        leader = before["cluster"]["leader"]

        survivor, *killed = sorted(m.name for m in cluster.members)
        killed_at = time.monotonic()
        for name in killed:
            cluster.member(name).stop(kill=True)
        # The scenario is "two seconds after the kill": the operator's moment, not a synchronisation.
        time.sleep(max(0.0, killed_at + 2.0 - time.monotonic()))

        took, after = timed_status(rig, "--json")
        rows = {m["member"]: m for m in after["members"]}
        assert [n for n, m in rows.items() if m["healthy"]] == [], rows
        assert not any(m["is_leader"] for m in rows.values()), rows
        for m in rows.values():
            assert m["reachable"] is True
            etcd = m["etcd"]
            assert etcd["healthy"] is False and etcd["age"] is not None and etcd["age"] <= 5.0, etcd
            assert etcd["measured_at"].endswith("Z"), etcd
        assert rows[survivor]["state"] == "no-leader", rows[survivor]
        assert rows[survivor]["etcd"]["leader"] is None
        assert all(rows[n]["state"] == "down" for n in killed), rows
        quorum = before["cluster"]["quorum"]
        assert quorum["state"] == "held", quorum
        assert quorum["sentence"] == f"quorum held: 3 of 3 healthy under leader {leader}"
        q = after["cluster"]["quorum"]
        assert q["state"] == "lost" and q["healthy"] == [], q
        assert q["sentence"] == f"quorum lost: {', '.join(killed)} down; {survivor} up without a leader", q
        assert after["cluster"]["healthy"] == 0 and after["cluster"]["leader"] is None
        assert took < STATUS_WITHIN, took

        # etcd.inspect (a restore's checks) measures now, in well under a second, with or without etcd
        for a in rig.agents:
            with a.client(rig.ckeys) as client:
                started = time.monotonic()
                inspected = client.call("etcd.inspect", timeout=10.0, retries=0)
                took = time.monotonic() - started
            etcd = inspected["etcd"]
            assert took < INSPECT_WITHIN and not etcd["healthy"], (a.member.name, took, inspected)
            assert (etcd["version"] is not None) == (a.member.name == survivor), inspected
            assert etcd["quorum"] is (False if a.member.name == survivor else None), inspected

        _, text = timed_status(rig)
        assert q["sentence"] in text
        member_lines = {line.split()[0]: line for line in text.splitlines()
                        if line.split()[:1] in (["m1"], ["m2"], ["m3"])}
        assert sorted(member_lines) == ["m1", "m2", "m3"], text
        assert not any("healthy" in line for line in member_lines.values()), text
        assert "NO LEADER" in member_lines[survivor] and all("DOWN" in member_lines[n] for n in killed), text

        # one agent process stopped too: status still answers at once and names it
        stopped = next(a for a in rig.agents if a.member.name == killed[0])
        stopped.kill()
        took, after = timed_status(rig, "--json")
        rows = {m["member"]: m for m in after["members"]}
        assert took < STATUS_WITHIN, took
        assert rows[killed[0]]["reachable"] is False
        assert "did not answer status within 1.5s" in rows[killed[0]]["error"], rows[killed[0]]
        q = after["cluster"]["quorum"]
        assert q["state"] == "lost", q
        assert q["sentence"] == (f"quorum lost: {killed[1]} down; {survivor} up without a leader; "
                                 f"{killed[0]} unknown (its agent did not answer)"), q
        took, text = timed_status(rig)
        assert took < STATUS_WITHIN and q["sentence"] in text, text
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)   # the handshake, not etcd, is under test
def test_status_answers_at_once_when_every_agent_refuses_the_coordinators_key(etcd_cluster3: EtcdCluster,
                                                                             tmp_path: Path) -> None:
    """A coordinator whose key no agent authorizes (a new host, keys not yet copied): each agent drops its
    CURVE handshake, and status still answers within the survey deadline, naming every member."""
    rig = RestoreRig(etcd_cluster3, tmp_path)
    try:
        rig.start()
        assert rig.coordinator is not None
        rig.coordinator.stop()
        stranger = CoordinatorKeys.create(tmp_path / "stranger-keys")
        config = rig.coordinator.config
        config.write_text(config.read_text().replace(str(rig.ckeys.secret_path), str(stranger.secret_path)))
        rig.start_coordinator()
        took, report = timed_status(rig, "--json")
        assert took < STATUS_WITHIN, took
        rows = {m["member"]: m for m in report["members"]}
        assert sorted(rows) == ["m1", "m2", "m3"]
        assert not any(m["reachable"] or m["healthy"] for m in rows.values()), rows
        assert all("did not answer status within 1.5s" in m["error"] for m in rows.values()), rows
        assert report["cluster"]["quorum"]["state"] == "unknown", report["cluster"]
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
