"""What a node-local restore refuses, and what a resumed one re-checks: real etcd, the real agent.

Each test reproduces one way a restore went wrong (issue 9 items 1-4, issue 10's
single-member rule): a resumed restore reading another file, a restore tool
outliving the agent, a store file replaced behind its sidecar, another
cluster's snapshot, bytes that only look like a snapshot, and a member of a
3-member cluster split off by a restore of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from etcdguard.agent.restore.swap import workspace_dir
from etcdguard.agent.runtime.proof import pid_alive
from etcdguard.common.wire import protocol as P

from tests.conftest import EtcdFactory
from tests.helpers.agentconf import AGENT, adopt, agent_sections, run_agent, write_agent_config
from tests.helpers.agents import CoordinatorKeys, op_header, op_journal, running_agents
from tests.helpers.etcd import EtcdBuild, EtcdCluster, EtcdMember
from tests.helpers.net import wait_until

SLEEPER = f"{sys.executable} -c 'import time; time.sleep(600)'"


def agent_json(*args: str, ok: bool = True, cwd: Path | None = None, timeout: float = 180) -> dict[str, Any]:
    r = subprocess.run([*AGENT, *args, "--json"], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       check=False)
    if ok:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stderr}"
    out = json.loads(r.stdout) if r.stdout.strip() else {}
    return {"rc": r.returncode, "stderr": r.stderr, **(out if isinstance(out, dict) else {"rows": out})}


def config_for(member: EtcdMember, workdir: Path, **etcd: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    sections = agent_sections(member, workdir)
    sections["etcd"].update(etcd)
    sections["restore"] = {"stop_timeout": "20s", "start_timeout": "30s"}
    adopt(member, workdir / "etcd.pid")
    return write_agent_config(workdir / "agent.toml", sections)


def hanging_tool(where: Path, real: Path, first_run: str) -> Path:
    """A restore tool that runs ``first_run`` (a shell snippet ending in exec) the first time it is
    asked to restore, and is the real tool after that; `version` and `--help` always pass through."""
    where.mkdir(parents=True, exist_ok=True)
    tool = where / real.name
    mark = where / "first-run-done"
    tool.write_text("#!/bin/sh\n"
                    'case "$*" in *"snapshot restore"*--data-dir*)\n'
                    f'  if [ ! -e {mark} ]; then touch {mark}; {first_run}; fi;;\n'
                    "esac\n"
                    f'exec {real} "$@"\n')
    tool.chmod(0o755)
    return tool


def kill_pid(pid_file: Path) -> None:
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def start_and_kill_in_prepare(cfg: Path, snapshot: str, op: str, cwd: Path, pid_file: Path) -> int:
    """Start `restore --yes`, wait until its restore tool runs, SIGKILL the agent; return the tool's pid."""
    proc = subprocess.Popen([*AGENT, "--config", str(cfg), "restore", snapshot, "--yes", "--op", op], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60,
                   what="the restore tool to start")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    return int(pid_file.read_text())


def store_snapshot(cfg: Path) -> dict[str, Any]:
    return agent_json("--config", str(cfg), "snapshot")


# -- item 1: a resume restores exactly the recorded, verified file ---------------------------------


def test_killed_in_prepare_the_tool_dies_and_a_resume_restores_only_the_verified_file(
        etcd_member: EtcdMember, tmp_path: Path) -> None:
    member = etcd_member
    tool_pid_file = tmp_path / "tool.pid"
    tool = hanging_tool(tmp_path / "bin", member.build.restore_tool,
                        f'echo $$ > {tool_pid_file}; exec {SLEEPER} "$@"')
    cfg = config_for(member, tmp_path / "agent", restore_tool=str(tool))
    member.put("/k1", "before")
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    dir_a.mkdir()
    dir_b.mkdir()
    first = store_snapshot(cfg)
    shutil.copyfile(first["path"], dir_a / "snap.db")
    member.etcdctl("del", "/k1")
    member.put("/other", "a later snapshot")
    second = store_snapshot(cfg)
    shutil.copyfile(second["path"], dir_b / "snap.db")   # another file of the same (relative) name
    op = "r-killed-in-prepare"
    pid = member.pid
    try:
        tool_pid = start_and_kill_in_prepare(cfg, "snap.db", op, dir_a, tool_pid_file)
        wait_until(lambda: not pid_alive(tool_pid), timeout=10, what="the restore tool to die with the agent")
    finally:
        kill_pid(tool_pid_file)
    record = op_header(tmp_path / "agent" / "state", op)
    argv = record["params"]["restore_argv"]
    assert argv[3] == str(dir_a / "snap.db") and Path(argv[0]).is_absolute()

    # The recorded file changed since it was verified: refused before any step, etcd untouched.
    original = (dir_a / "snap.db").read_bytes()
    shutil.copyfile(dir_b / "snap.db", dir_a / "snap.db")
    refused = agent_json("--config", str(cfg), "restore", "--op", op, "--yes", ok=False, cwd=dir_b)
    assert refused["rc"] == 3, refused["stderr"]
    assert f"{dir_a / 'snap.db'} is no longer the snapshot it was started with" in refused["stderr"]
    assert member.pids() == [pid] and member.get("/other") == "a later snapshot"

    # With the verified file back, a resume from another directory restores it, not ./snap.db.
    (dir_a / "snap.db").write_bytes(original)
    done = agent_json("--config", str(cfg), "restore", "--op", op, "--yes", cwd=dir_b)
    assert done["state"] == "done"
    assert member.get("/k1") == "before" and member.get("/other") is None


def test_resume_kills_a_leftover_restore_tool_before_redoing_prepare(etcd_member: EtcdMember,
                                                                      tmp_path: Path) -> None:
    member = etcd_member
    tool_pid_file, leftover_file = tmp_path / "tool.pid", tmp_path / "leftover.pid"
    # The first run leaves a detached process running this operation's restore command (as a
    # tool that escaped its parent would), then hangs itself.
    detached = (f"{sys.executable} -c 'import os, sys, time; os.setsid(); "
                "open(sys.argv[1], \"w\").write(str(os.getpid())); time.sleep(600)' "
                f'{leftover_file} "$@" </dev/null >/dev/null 2>&1 &')
    tool = hanging_tool(tmp_path / "bin", member.build.restore_tool,
                        f'{detached} echo $$ > {tool_pid_file}; exec {SLEEPER} "$@"')
    cfg = config_for(member, tmp_path / "agent", restore_tool=str(tool))
    member.put("/k1", "before")
    snap = store_snapshot(cfg)
    member.put("/k2", "after")
    op = "r-leftover-tool"
    try:
        start_and_kill_in_prepare(cfg, snap["path"], op, tmp_path, tool_pid_file)
        wait_until(lambda: leftover_file.exists() and leftover_file.read_text().strip(), timeout=10,
                   what="the detached leftover to start")
        leftover = int(leftover_file.read_text())
        assert pid_alive(leftover)
        done = agent_json("--config", str(cfg), "restore", "--op", op, "--yes")
        assert done["state"] == "done"
        assert not pid_alive(leftover), "the leftover restore tool was not killed"
    finally:
        kill_pid(leftover_file)
        kill_pid(tool_pid_file)
    journal = op_journal(tmp_path / "agent" / "state", op)
    kills = [e for e in journal if e["event"] == "killed-leftover-tool"]
    assert len(kills) == 1 and f"pid {leftover} " in kills[0]["processes"][0]
    assert member.get("/k1") == "before" and member.get("/k2") is None



@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_remote_step_refuses_when_the_staged_snapshot_changed(etcd_member: EtcdMember, tmp_path: Path) -> None:
    """A restore.step of an operation created earlier re-checks its snapshot before it runs."""
    member = etcd_member
    member.put("/k1", "before")
    ckeys = CoordinatorKeys.create(tmp_path / "coordinator-keys")
    with running_agents([member], tmp_path, ckeys) as (agent,):
        assert agent.seeded is not None
        params = {"snapshot": "up.db", "name": member.name, "initial_cluster": f"{member.name}={member.peer_url}",
                  "token": "etcdguard-op-r1", "peer_url": member.peer_url, "bump_revision": 0}
        with agent.client(ckeys) as client:
            assert client.put_snapshot(Path(agent.seeded.path), "up")["staged"] == "up.db"
            client.call("restore.step", {"op_id": "op-r1", "step": "prepare", "params": params}, timeout=120)
            staged = agent.staging_dir / "up.db"
            data = bytearray(staged.read_bytes())
            data[5000] ^= 0xFF
            staged.write_bytes(bytes(data))
            with pytest.raises(P.RemoteError) as info:
                client.call("restore.step", {"op_id": "op-r1", "step": "fence"}, timeout=120)
            assert info.value.code == P.UNSAFE and "is no longer the snapshot it was started with" in info.value.message
            status = client.call("restore.status", {"op_id": "op-r1"})
            assert sorted(status["steps"]) == ["preflight", "prepare"]       # fence never ran
            assert client.call("restore.step", {"op_id": "op-r1", "step": "rollback"}, timeout=120)["state"] == \
                "rolled-back"
    assert member.get("/k1") == "before"

# -- item 2: a store snapshot must be the file its catalog sidecar describes -----------------------


def test_store_file_replaced_behind_its_sidecar_is_refused(etcd_member: EtcdMember, tmp_path: Path) -> None:
    member = etcd_member
    cfg = config_for(member, tmp_path / "agent")
    member.put("/k1", "before")
    snap = store_snapshot(cfg)
    plan = agent_json("--config", str(cfg), "restore", "latest", "--plan")
    assert plan["params"]["snapshot_revision"] == snap["revision"]     # the file's own revision
    member.put("/k2", "after")
    other = tmp_path / "other.db"
    agent_json("--config", str(cfg), "snapshot", "--output", str(other))
    store_file, sidecar = Path(snap["path"]), Path(snap["path"] + ".json")
    shutil.copyfile(other, store_file)          # the catalog entry now holds another snapshot
    pid = member.pid
    for args in (("latest", "--plan"), ("latest", "--yes"), (store_file.name, "--yes")):
        r = agent_json("--config", str(cfg), "restore", *args, ok=False)
        assert r["rc"] == 3, (args, r["stderr"])
        assert "is not the snapshot its catalog record" in r["stderr"] and "sha256" in r["stderr"]
    # A sidecar edited to the new file's sha256 and size still records the old revision.
    meta = json.loads(sidecar.read_text())
    data = other.read_bytes()
    meta.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    sidecar.write_text(json.dumps(meta))
    r = agent_json("--config", str(cfg), "restore", "latest", "--yes", ok=False)
    assert r["rc"] == 3 and f"differs from the recorded {snap['revision']}" in r["stderr"]
    assert member.pids() == [pid] and member.get("/k2") == "after"
    assert not list(member.data_dir.glob(".etcdguard-*"))
    assert not (tmp_path / "agent" / "state" / "operations").exists()


# -- item 3: another cluster's snapshot needs --force -----------------------------------------------


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["sidecar", "file-only"])
def test_snapshot_of_another_cluster_is_refused_unless_forced(etcd_factory: EtcdFactory, etcd_build: EtcdBuild,
                                                              tmp_path: Path, with_sidecar: bool) -> None:
    here, there = etcd_factory.member(etcd_build), etcd_factory.member(etcd_build)
    here.put("/here", "1")
    there.put("/there", "1")
    cfg = config_for(here, tmp_path / "here")
    if with_sidecar:
        foreign = Path(store_snapshot(config_for(there, tmp_path / "there"))["path"])
    else:
        foreign = tmp_path / "there.db"
        r = run_agent("snapshot", "--output", str(foreign), "--endpoints", there.client_url)
        assert r.returncode == 0, r.stderr
    pid = here.pid
    plan = agent_json("--config", str(cfg), "restore", str(foreign), "--plan", ok=False)
    assert plan["rc"] == 3 and plan["exit"] == 3
    assert any("from another cluster" in reason and "--force" in reason for reason in plan["refusals"])
    refused = agent_json("--config", str(cfg), "restore", str(foreign), "--yes", ok=False)
    assert refused["rc"] == 3 and "from another cluster" in refused["stderr"]
    assert here.pids() == [pid] and here.get("/here") == "1" and here.get("/there") is None
    assert not list(here.data_dir.glob(".etcdguard-*"))

    forced = agent_json("--config", str(cfg), "restore", str(foreign), "--yes", "--force")
    assert forced["state"] == "done"
    assert here.get("/there") == "1" and here.get("/here") is None
    record = op_header(tmp_path / "here" / "state", forced["op"])
    assert record["checks"]["identity"] == "another-cluster" and record["checks"]["forced"]


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_own_snapshot_restores_again_after_a_restore_changed_the_cluster_id(etcd_member: EtcdMember,
                                                                            tmp_path: Path) -> None:
    """No false refusal: every restore makes a new cluster id, and this node remembers its old ones."""
    member = etcd_member
    cfg = config_for(member, tmp_path / "agent")
    member.put("/k1", "before")
    snap = store_snapshot(cfg)
    before = member.status()["header"]["cluster_id"]
    agent_json("--config", str(cfg), "restore", snap["path"], "--yes")
    assert member.status()["header"]["cluster_id"] != before
    member.put("/k2", "after")
    again = agent_json("--config", str(cfg), "restore", snap["path"], "--yes")
    assert again["state"] == "done" and member.get("/k2") is None and member.get("/k1") == "before"


# -- item 4: verify means restorable ------------------------------------------------------------------


def test_verify_refuses_bytes_that_are_not_an_etcd_snapshot(etcd_member: EtcdMember, tmp_path: Path) -> None:
    cfg = config_for(etcd_member, tmp_path / "agent")
    hello = tmp_path / "hello.db"
    hello.write_bytes(b"hello" + hashlib.sha256(b"hello").digest())
    r = run_agent("verify", str(hello))
    assert r.returncode == 1
    assert f"{hello}: not an etcd snapshot" in r.stderr and "bbolt" in r.stderr

    etcd_member.put("/k", "v")
    good = Path(store_snapshot(cfg)["path"])
    ok = agent_json("--config", str(cfg), "verify", str(good))
    assert ok["ok"] is True and ok["sidecar"] is True and ok["revision"] == etcd_member.revision()
    assert ok["members"] == [etcd_member.name]
    assert ok["cluster_id_computed"] == f"{int(etcd_member.status()['header']['cluster_id']):x}"

    # bbolt's meta pages intact, the rest of the database gone: only `snapshot status` can tell.
    page_size = 4096
    head = good.read_bytes()[: 2 * page_size]
    gutted = tmp_path / "gutted.db"
    gutted.write_bytes(head + hashlib.sha256(head).digest())
    bad = agent_json("--config", str(cfg), "verify", str(gutted), ok=False)
    assert bad["rc"] == 1 and bad["ok"] is False
    assert bad["error"].startswith(f"{gutted}: not restorable")


# -- issue 10: a node-local restore never splits a member off a multi-member cluster ---------------


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
@pytest.mark.parametrize("source", ["configured", "live"])
def test_node_local_restore_on_a_member_of_three_is_refused(etcd_cluster3: EtcdCluster, tmp_path: Path,
                                                           source: str) -> None:
    cluster = etcd_cluster3
    m1 = cluster.members[0]
    cluster.etcdctl("put", "/k", "v")
    extra: dict[str, Any] = {}
    if source == "live":   # a start command that names this member alone: the live member list decides
        extra["start_command"] = [a if not a.startswith("--initial-cluster=") else
                                  f"--initial-cluster={m1.name}={m1.peer_url}" for a in m1.command]
    cfg = config_for(m1, tmp_path / "agent", **extra)
    store_snapshot(cfg)
    members_before = cluster.etcdctl("member", "list", "-w", "json").stdout
    ids_before = sorted(m["ID"] for m in json.loads(members_before)["members"])
    revision = m1.revision()
    hashes = cluster.hashkvs(revision)
    pids = {m.name: m.pids() for m in cluster.members}

    plan = agent_json("--config", str(cfg), "restore", "latest", "--plan", ok=False)
    assert plan["rc"] == 3 and plan["exit"] == 3
    reason = " ".join(plan["refusals"])
    assert "multi-member cluster" in reason and "etcdguardctl restore" in reason
    assert ("live member list has 3 members" if source == "live" else "--initial-cluster has 3") in reason
    run = agent_json("--config", str(cfg), "restore", "latest", "--yes", ok=False)
    assert run["rc"] == 3 and "multi-member cluster" in run["stderr"]

    assert {m.name: m.pids() for m in cluster.members} == pids
    ids_after = sorted(m["ID"] for m in json.loads(cluster.etcdctl("member", "list", "-w", "json").stdout)["members"])
    assert ids_after == ids_before
    assert cluster.hashkvs(revision) == hashes
    assert m1.get("/k") == "v"
    assert not list(m1.data_dir.glob(".etcdguard-*"))
    assert not (tmp_path / "agent" / "state" / "operations").exists()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_cluster_restore_steps_still_prepare_a_member_of_three(etcd_cluster3: EtcdCluster, tmp_path: Path) -> None:
    """The refusal is the local command's: the coordinator's restore.step prepare runs on a member of 3."""
    cluster = etcd_cluster3
    m1 = cluster.members[0]
    ckeys = CoordinatorKeys.create(tmp_path / "coordinator-keys")
    with running_agents([m1], tmp_path, ckeys) as (agent,):
        assert agent.seeded is not None
        params = {"snapshot": agent.seeded.name, "name": m1.name, "initial_cluster": cluster.initial_cluster,
                  "token": "etcdguard-op-c1", "peer_url": m1.peer_url, "bump_revision": 0}
        with agent.client(ckeys) as client:
            prepared = client.call("restore.step", {"op_id": "op-c1", "step": "prepare", "params": params},
                                   timeout=120)
            assert Path(prepared["prepared"], "snap", "db").is_file()
            assert workspace_dir(m1.data_dir, "op-c1").is_dir()
            rolled = client.call("restore.step", {"op_id": "op-c1", "step": "rollback"}, timeout=120)
            assert rolled["state"] == "rolled-back"
    assert not workspace_dir(m1.data_dir, "op-c1").exists()
    cluster.wait_healthy(30)
