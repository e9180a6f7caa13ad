"""Replacing one lost member while the others keep quorum: for real, three etcd members, agents, a coordinator.

m3's etcd is SIGKILLed and its data dir deleted: the cluster keeps serving on
m1 and m2. `etcdguardctl replace m3 --yes` removes it, sets what is left of
its data aside, adds it back as a learner, starts it to join, waits until it
caught up, promotes it and confirms the cluster whole: one cluster id as
before, no key and no revision lost, the same hashkv everywhere, and every
write acknowledged during the replacement present on all three.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from tests.e2e.conftest import KEYS
from tests.helpers.etcd import EtcdCluster, EtcdMember
from tests.helpers.restore_rig import RestoreRig, phase_done, state_of
from tests.helpers.writer import Writer

pytestmark = pytest.mark.slow


def lose(member: EtcdMember) -> None:
    """The member's VM or disk is gone: its etcd killed, its data dir deleted."""
    member.stop(kill=True)
    shutil.rmtree(member.data_dir)


def cluster_id(m: EtcdMember) -> int:
    return int(m.status()["header"]["cluster_id"])


def assert_whole(cluster: EtcdCluster, old_cluster_id: int, revision_before: int, writer: Writer) -> None:
    statuses = cluster.statuses()
    assert sorted(statuses) == ["m1", "m2", "m3"], statuses
    assert {int(s["header"]["cluster_id"]) for s in statuses.values()} == {old_cluster_id}
    revisions = {int(s["header"]["revision"]) for s in statuses.values()}
    assert min(revisions) >= revision_before
    hashes = cluster.hashkvs(min(revisions))
    assert len(set(hashes.values())) == 1, hashes
    members = json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)["members"]
    assert sorted((m["name"], m["peerURLs"][0]) for m in members) == sorted(
        (m.name, m.peer_url) for m in cluster.members)
    assert not any(m.get("isLearner") for m in members)
    for m in cluster.members:
        assert m.get("/registry/demo/k007") == "value-7", m.name
        keys = m.etcdctl("get", "--prefix", "/registry/demo/", "--keys-only").stdout.split()
        assert len(keys) == KEYS, m.name
        assert writer.missing_on(m) == [], m.name


def replace(rig: RestoreRig, *args: str) -> dict[str, Any]:
    r = rig.ctl("replace", *args, "--json", timeout=300)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
    return dict(json.loads(r.stdout))


@pytest.mark.parametrize("etcd_build", ["3.5", "3.4"], indirect=True)
def test_a_lost_member_is_replaced_while_writes_go_on(rig: RestoreRig) -> None:
    cluster = rig.cluster
    m1, m2, m3 = cluster.members
    old_id = cluster_id(m1)
    lose(m3)
    revision_before = int(m1.status()["header"]["revision"])

    diagnosis = rig.ctl("diagnose", "--json")
    assert diagnosis.returncode == 12, f"{diagnosis.stderr}\n{diagnosis.stdout}"      # member-lost
    verdict = json.loads(diagnosis.stdout)
    assert verdict["verdict"] == "member-lost" and verdict["command"] == "etcdguardctl replace m3 --plan"
    assert "m3" in verdict["summary"] and verdict["problems"][0]["member"] == "m3"
    assert "m3" in rig.ctl("diagnose").stdout

    plan = rig.ctl_json("replace", "m3", "--plan")
    assert plan["refused"] is False, plan["refusals"]
    assert [p["phase"] for p in plan["phases"]] == ["health-check", "retire", "set-aside", "remove", "add-learner",
                                                    "join", "catch-up", "promote", "settle", "confirm"]
    assert m3.is_running() is False                 # --plan changed nothing

    with Writer([m1, m2]) as writer:
        summary = replace(rig, "m3", "--yes", "--plan-id", plan["plan_id"])
    assert summary["state"] == "done", summary
    assert len(writer.acked) > 20 and summary["time_to_healthy_seconds"] > 0
    cluster.wait_healthy(30)
    assert_whole(cluster, old_id, revision_before, writer)
    # the agent's own operation is closed; the coordinator lists it as done
    assert [(r["op"], r["state"]) for r in rig.ctl_json("restores")] == [(summary["op"], "done")]
    # nothing but the start command of the process runtime changed: the agent config is as it was
    assert rig.agents[2].sections["etcd"]["start_command"] == m3.command
    after = rig.ctl("diagnose", "--json")
    assert json.loads(after.stdout)["verdict"] in ("healthy", "backups-stale"), after.stdout   # the vault may be empty


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_coordinator_killed_at_every_step_boundary_resumes_the_replacement(rig: RestoreRig) -> None:
    cluster = rig.cluster
    m1, m2, m3 = cluster.members
    old_id = cluster_id(m1)
    lose(m3)
    revision_before = int(m1.status()["header"]["revision"])
    steps = ["health-check", "retire", "set-aside", "remove", "add-learner", "join", "catch-up", "promote", "settle"]
    with Writer([m1, m2]) as writer:
        ctl = rig.spawn_ctl("replace", "m3", "--yes", "--json")
        op = ""
        for i, step in enumerate(steps):
            op = rig.wait_journal(phase_done(step), what=f"step {step} done")
            rig.kill_coordinator()
            ctl.wait(30)   # the ctl loses its daemon: the replacement is not abandoned, it is interrupted
            rig.start_coordinator()
            assert state_of(rig.journal(op)) == "interrupted"
            if i == 3:     # past remove there is no way back: a rollback is refused, nothing changes
                r = rig.ctl("replace", "--rollback", op)
                assert r.returncode == 3 and f"--resume {op}" in r.stderr, r.stderr
            ctl = rig.spawn_ctl("replace", "--resume", op, "--json")
        out, err = ctl.communicate(timeout=300)
    assert ctl.returncode == 0, f"{err}\n{out}"
    assert json.loads(out)["state"] == "done"
    cluster.wait_healthy(30)
    assert_whole(cluster, old_id, revision_before, writer)


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_replacing_with_another_member_down_is_refused_and_changes_nothing(rig: RestoreRig) -> None:
    cluster = rig.cluster
    m1, m2, m3 = cluster.members
    m2.stop(kill=True)
    members_before = cluster.etcdctl("member", "list", "-w", "json", "--endpoints", m1.client_url).stdout
    for args in (("m3", "--yes"), ("m3", "--plan")):
        r = rig.ctl("replace", *args, "--json")
        assert r.returncode == 3, f"{r.stderr}\n{r.stdout}"
        out = json.loads(r.stdout)
        text = json.dumps(out)
        assert "m2" in text and "quorum" in text, text
    assert m3.is_running() and m1.is_running()
    assert rig.ops() == []                               # no operation was even created
    assert json.loads(cluster.etcdctl("member", "list", "-w", "json", "--endpoints", m1.client_url).stdout)[
        "members"] == json.loads(members_before)["members"]
    # a member whose agent cannot be reached, with no replacement host named, is refused the same way
    m2.start()
    cluster.wait_healthy(30)
    rig.agents[2].kill()
    r = rig.ctl("replace", "m3", "--yes")
    assert r.returncode == 3 and "cannot be reached" in r.stderr and "--peer-url" in r.stderr, r.stderr
    assert rig.ops() == [] and m3.is_running()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_member_is_replaced_onto_a_new_host(rig: RestoreRig, etcd_build: Any, tmp_path: Any) -> None:
    """m3's host is gone with its agent; a new host (a new agent, a new data dir, a new peer URL) takes its
    place: the operator points [[members]] m3 at the new agent, reloads, and replaces with --peer-url."""
    import os
    import signal

    from tests.helpers.agentconf import agent_sections
    from tests.helpers.agents import AgentProcess
    from tests.helpers.coordinator import coordinator_config
    from tests.helpers.net import wait_until

    cluster = rig.cluster
    m1, m2, m3 = cluster.members
    old_id = cluster_id(m1)
    lose(m3)
    rig.agents[2].kill()                               # the old host is gone, its agent with it
    revision_before = int(m1.status()["header"]["revision"])
    new = EtcdMember(etcd_build, tmp_path / "newhost", name="m3",
                     initial_cluster=f"m1={m1.peer_url},m2={m2.peer_url}", cluster_token=m1.cluster_token)
    new._initial_cluster = f"{new._initial_cluster},m3={new.peer_url}"
    workdir = tmp_path / "agent-newhost"
    etcd = {**agent_sections(new, workdir, runtime=None)["etcd"], "runtime": "process", "start_command": new.command,
            "pid_file": str(workdir / "etcd.pid")}
    agent = AgentProcess(new, workdir, authorized=[rig.ckeys.public_path], runtime=None, seed=False,
                         sections={"etcd": etcd})
    try:
        agent.start()
        refused = rig.ctl("replace", "m3", "--plan")
        assert refused.returncode == 3 and "cannot be reached" in refused.stdout, refused.stdout
        # the operator points [[members]] m3 at the new host's agent and reloads the coordinator
        assert rig.coordinator is not None and rig.coordinator.proc is not None
        coordinator_config(rig.tmp, rig.ckeys, [*rig.agents[:2], agent], rig.metrics_port,
                           extra={"restore": rig._restore})
        os.kill(rig.coordinator.proc.pid, signal.SIGHUP)
        wait_until(lambda: any(m["member"] == "m3" and m["agent"] == agent.endpoint
                               for m in rig.ctl_json("status")["members"]), 30, what="the reloaded config")
        unconfirmed = rig.ctl_json("replace", "m3", "--plan", expect=3)
        assert any("--peer-url" in r["message"] for r in unconfirmed["refusals"]), unconfirmed["refusals"]
        with Writer([m1, m2]) as writer:
            summary = replace(rig, "m3", "--peer-url", new.peer_url, "--yes")
        assert summary["state"] == "done", summary
        cluster.members[2] = new
        cluster.wait_healthy(30)
        assert_whole(cluster, old_id, revision_before, writer)
        # the coordinator's configuration and etcd's member list agree: nothing more to change
        verdict = json.loads(rig.ctl("diagnose", "--json").stdout)
        assert not any(p["kind"] == "config-drift" for p in verdict["problems"]), verdict["problems"]
    finally:
        agent.kill()
        new.stop(kill=True)
        cluster.members[2] = m3


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_lost_static_pod_member_is_replaced_and_its_manifest_left_as_it_was(etcd_factory: Any, etcd_build: Any,
                                                                             tmp_path: Any) -> None:
    """kubeadm-shaped nodes, each with its own test kubelet: m3's etcd killed and its data deleted (the
    kubelet restarts it, and it crash-loops without its data). The replacement parks its manifest, joins
    through an edited one, and puts the original back byte for byte."""
    from tests.e2e.conftest import seed
    from tests.helpers.kubelet import TestKubelet
    from tests.helpers.manifests import etcd_manifest_yaml

    cluster = etcd_factory.cluster(etcd_build, size=3, start=False)
    kubelets: dict[str, TestKubelet] = {}
    try:
        for m in cluster.members:
            k = TestKubelet(tmp_path / m.name / "manifests", tmp_path / m.name / "kubelet-logs")
            k.manifests_dir.mkdir(parents=True)
            kubelets[m.name] = k.start()
            (k.manifests_dir / "etcd.yaml").write_text(etcd_manifest_yaml(m, grace=5))
        cluster.wait_healthy(60)
        seed(cluster)
        m1, m2, m3 = cluster.members
        manifest = kubelets["m3"].manifests_dir / "etcd.yaml"
        steady = manifest.read_bytes()

        def sections(m: Any) -> dict[str, Any]:
            return {"etcd": {"runtime": "static-pod", "manifest": str(kubelets[m.name].manifests_dir / "etcd.yaml")},
                    "restore": {"stop_timeout": "60s", "start_timeout": "60s"}}

        rig = RestoreRig(cluster, tmp_path / "rig", runtime="static-pod", member_sections=sections)
        try:
            rig.start()
            old_id = cluster_id(m1)
            revision_before = int(m1.status()["header"]["revision"])
            shutil.rmtree(m3.data_dir)
            m3.stop(kill=True)
            with Writer([m1, m2]) as writer:
                summary = replace(rig, "m3", "--yes")
            assert summary["state"] == "done", summary
            cluster.wait_healthy(60)
            assert_whole(cluster, old_id, revision_before, writer)
        except BaseException:
            rig.dump_logs()
            raise
        finally:
            rig.stop()
        assert manifest.read_bytes() == steady               # the manifest exactly as it was
        assert sorted(f.name for f in manifest.parent.iterdir()) == ["etcd.yaml"]
        started = [e for e in kubelets["m3"].events_for("etcd.yaml") if e.what == "started"]
        assert len(started) >= 3, started                    # the first start, the joining one, the steady one
    finally:
        for k in kubelets.values():
            k.stop_all()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_a_replacement_failing_before_the_removal_puts_the_member_back_as_it_was(rig: RestoreRig) -> None:
    """The member's data cannot be set aside (its member dir is a mount point, which cannot be renamed): the
    replacement fails before anything is removed from etcd, and the member runs again on its own data."""
    import subprocess

    cluster = rig.cluster
    m3 = cluster.members[2]
    member_id = m3.member_id()
    member = str(m3.data_dir / "member")
    if subprocess.run(["mount", "--bind", member, member], capture_output=True, check=False).returncode != 0:
        pytest.skip("bind mounts need root")
    try:
        r = rig.ctl("replace", "m3", "--yes", "--json")
        cluster.wait_healthy(30)
    finally:
        subprocess.run(["umount", "--lazy", member], check=True)   # etcd holds files in it again
    summary = json.loads(r.stdout)
    assert r.returncode == 1 and summary["state"] == "failed" and summary["failed_phase"] == "set-aside", summary
    records = rig.journal(summary["op"])
    assert not any(x.get("phase") == "remove" for x in records)                  # etcd's member list untouched
    assert {x["phase"] for x in records if x.get("event") == "revert-step"} == {"set-aside", "retire"}
    assert m3.member_id() == member_id and (m3.data_dir / "member").is_dir()
    assert rig.ctl("replace", "--rollback", summary["op"]).returncode == 2       # failed is final: nothing to undo
