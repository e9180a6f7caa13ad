"""Node-local restore end to end: real etcd (3.4 and 3.5), process and static-pod runtimes.

The static-pod runtime runs against tests/helpers/kubelet.TestKubelet, which
starts and stops the processes that manifests in a temp dir describe.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from etcdguard.agent.restore.swap import aside_member, workspace_dir

from tests.conftest import EtcdFactory
from tests.helpers.agentconf import AGENT, adopt, agent_sections, run_agent, write_agent_config
from tests.helpers.agents import steps_done
from tests.helpers.etcd import EtcdBuild, EtcdMember
from tests.helpers.kubelet import TestKubelet
from tests.helpers.manifests import apiserver_manifest_json, etcd_manifest_yaml
from tests.helpers.net import free_server_port, wait_until
from tests.helpers.standins import livez

BUMP = 1_000_000_000


def agent_json(*args: str, ok: bool = True, timeout: float = 180) -> dict[str, Any]:
    r = run_agent(*args, "--json", timeout=timeout)
    if ok:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stderr}"
    return {"rc": r.returncode, "stderr": r.stderr, **(json.loads(r.stdout) if r.stdout.strip() else {})}


def check_restore_and_rollback(member: EtcdMember, cfg: Path) -> dict[str, Any]:
    """K1 -> snapshot -> K2, delete K1 -> restore -> K1 back, K2 gone -> rollback -> K2 back."""
    member.put("/k1", "before")
    snap = agent_json("--config", str(cfg), "snapshot")
    member.put("/k2", "after")
    member.etcdctl("del", "/k1")
    live_inode = (member.data_dir / "member").stat().st_ino

    plan = agent_json("--config", str(cfg), "restore", snap["path"], "--plan")
    assert [s["step"] for s in plan["steps"]] == [
        "preflight", "prepare", "fence", "stop", "swap", "start", "verify", "unfence"]
    assert not workspace_dir(member.data_dir, plan["op"]).exists()  # --plan changes nothing

    out = agent_json("--config", str(cfg), "restore", snap["path"], "--yes")
    op = out["op"]
    assert out["state"] == "done"
    assert member.get("/k1") == "before"
    assert member.get("/k2") is None
    revision = member.revision()
    assert revision >= snap["revision"]
    if member.build.supports_bump_revision:
        assert revision >= snap["revision"] + BUMP
    aside = aside_member(member.data_dir, op)
    assert aside.is_dir() and aside.stat().st_ino == live_inode  # old data kept, by rename
    restored = member.data_dir / "member"
    assert stat.S_IMODE(restored.stat().st_mode) == stat.S_IMODE(aside.stat().st_mode)

    listed = json.loads(run_agent("--config", str(cfg), "restores", "--json", check=True).stdout)
    assert [(r["op"], r["state"]) for r in listed] == [(op, "done")]
    assert [k["path"] for k in listed[0]["kept"]] == [str(aside)]

    # The restore was unfenced: clients may have seen its revisions, so going back needs --yes.
    refused = run_agent("--config", str(cfg), "rollback", op)
    assert refused.returncode == 3, refused.stderr
    assert "was unfenced" in refused.stderr and "revisions go backwards" in refused.stderr
    assert f"etcdguard-agent rollback {op} --yes" in refused.stderr
    assert member.get("/k1") == "before" and member.get("/k2") is None   # nothing was rolled back
    assert (member.data_dir / "member").stat().st_ino != live_inode
    back = agent_json("--config", str(cfg), "rollback", op, "--yes")
    assert back["state"] == "rolled-back" and back["revisions_backwards"] is True
    assert "revisions go backwards" in back["stderr"]
    assert member.get("/k2") == "after"
    assert member.get("/k1") is None
    assert (member.data_dir / "member").stat().st_ino == live_inode
    return {"op": op, "snapshot": snap}


# -- process runtime ---------------------------------------------------------------------------


@pytest.fixture
def adopted(etcd_member: EtcdMember, tmp_path: Path) -> tuple[EtcdMember, Path]:
    """A single-member etcd started by hand (the harness) and adopted through pid_file."""
    sections = agent_sections(etcd_member, tmp_path)
    sections["restore"] = {"stop_timeout": "20s", "start_timeout": "30s"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    adopt(etcd_member, tmp_path / "etcd.pid")
    return etcd_member, cfg


def test_process_runtime_restore_and_rollback(adopted: tuple[EtcdMember, Path]) -> None:
    member, cfg = adopted
    check_restore_and_rollback(member, cfg)


def test_corrupt_snapshot_refused_before_anything_stops(adopted: tuple[EtcdMember, Path], tmp_path: Path) -> None:
    member, cfg = adopted
    snap = agent_json("--config", str(cfg), "snapshot")
    bad = tmp_path / "bad.db"
    data = bytearray(Path(snap["path"]).read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    pid = member.pid
    r = run_agent("--config", str(cfg), "restore", str(bad), "--yes")
    assert r.returncode == 1
    assert "trailer does not match" in r.stderr
    assert member.pids() == [pid]  # same process: never stopped
    assert not list(member.data_dir.glob(".etcdguard-*"))


def _wrapper_tool(tmp_path: Path, real: Path, body: str) -> Path:
    # Not named etcdctl: a configured etcdctl gives way to an etcdutl on PATH, and this wrapper must be used.
    tool = tmp_path / "restore-tool"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return tool


def test_restore_tool_failure_in_prepare_changes_nothing(etcd_member: EtcdMember, tmp_path: Path) -> None:
    real = etcd_member.build.restore_tool
    # Answers `version`/`--help` like the real tool, but the restore itself fails.
    tool = _wrapper_tool(tmp_path / "bin" if (tmp_path / "bin").mkdir() is None else tmp_path, real,
                         f'case "$*" in *"snapshot restore"*--data-dir*) echo "boom: disk on fire" >&2; exit 1;; esac\n'
                         f'exec {real} "$@"')
    sections = agent_sections(etcd_member, tmp_path)
    sections["etcd"]["restore_tool"] = str(tool)
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    adopt(etcd_member, tmp_path / "etcd.pid")
    snap = agent_json("--config", str(cfg), "snapshot")
    etcd_member.put("/k2", "after")
    pid = etcd_member.pid
    r = run_agent("--config", str(cfg), "restore", snap["path"], "--yes")
    assert r.returncode == 1
    assert "step prepare failed" in r.stderr and "boom: disk on fire" in r.stderr
    assert etcd_member.pids() == [pid]
    assert etcd_member.get("/k2") == "after"
    assert not list(etcd_member.data_dir.glob(".etcdguard-*"))
    assert not list(etcd_member.data_dir.glob("member.etcdguard-*"))


def test_failure_after_swap_puts_old_data_back(etcd_member: EtcdMember, tmp_path: Path) -> None:
    real = etcd_member.build.restore_tool
    (tmp_path / "bin").mkdir()
    # Restores for real, then ruins the prepared db so the new etcd cannot start.
    tool = _wrapper_tool(tmp_path / "bin", real,
                         f'{real} "$@" || exit $?\n'
                         'case "$*" in *"snapshot restore"*)\n'
                         '  for a; do case "$prev" in --data-dir) d="$a";; esac; prev="$a"; done\n'
                         '  printf garbage > "$d/member/snap/db";;\n'
                         'esac')
    sections = agent_sections(etcd_member, tmp_path)
    sections["etcd"]["restore_tool"] = str(tool)
    sections["restore"] = {"start_timeout": "6s", "stop_timeout": "20s"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    adopt(etcd_member, tmp_path / "etcd.pid")
    snap = agent_json("--config", str(cfg), "snapshot")
    etcd_member.put("/k2", "after")
    live_inode = (etcd_member.data_dir / "member").stat().st_ino
    r = run_agent("--config", str(cfg), "restore", snap["path"], "--yes")
    assert r.returncode == 1, r.stderr
    assert "step start failed" in r.stderr
    assert "pre-restore data back" in r.stderr
    assert (etcd_member.data_dir / "member").stat().st_ino == live_inode
    wait_until(etcd_member.healthy, timeout=30, what="etcd healthy again on the old data")
    assert etcd_member.get("/k2") == "after"


def test_with_etcdutl_present_etcdctl_is_never_called_for_a_snapshot(etcd_factory: EtcdFactory,
                                                                     etcd35_build: EtcdBuild, tmp_path: Path) -> None:
    """etcd 3.6 has no `etcdctl snapshot status|restore`: with an etcdutl on the search path (or beside the
    configured etcdctl), snapshot, verify and restore use etcdutl alone. The etcdctl here fails every call."""
    assert etcd35_build.etcdutl is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ctl_log, utl_log = tmp_path / "etcdctl.calls", tmp_path / "etcdutl.calls"
    etcdctl = bin_dir / "etcdctl"
    etcdctl.write_text(f'#!/bin/sh\necho "$*" >> {ctl_log}\necho "Error: unknown command" >&2\nexit 1\n')
    etcdutl = bin_dir / "etcdutl"
    etcdutl.write_text(f'#!/bin/sh\necho "$*" >> {utl_log}\nexec {etcd35_build.etcdutl} "$@"\n')
    for tool in (etcdctl, etcdutl):
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    member = etcd_factory.member(etcd35_build)
    member.put("/k1", "before")

    # No config at all: the tools are found on PATH.
    out = tmp_path / "by-hand.db"
    r = run_agent("snapshot", *member.etcdctl_env_args(), "--output", str(out), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["revision"] == member.revision()
    verified = run_agent("verify", str(out), "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["tool"].startswith("etcdutl ")

    # etcd.restore_tool names the etcdctl: the etcdutl beside it does the work.
    sections = agent_sections(member, tmp_path)
    sections["etcd"]["restore_tool"] = str(etcdctl)
    sections["restore"] = {"stop_timeout": "20s", "start_timeout": "30s"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    adopt(member, tmp_path / "etcd.pid")
    snap = agent_json("--config", str(cfg), "snapshot")
    member.put("/k2", "after")
    r = run_agent("--config", str(cfg), "restore", snap["path"], "--yes", "--json", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "done"
    assert member.get("/k1") == "before" and member.get("/k2") is None
    checked = run_agent("--config", str(cfg), "check", "--json", env=env)
    tool_check = next(c for c in json.loads(checked.stdout)["checks"] if c["name"] == "restore tool")
    assert tool_check["warning"] and f"instead of the configured etcdctl {etcdctl}" in tool_check["detail"]

    assert not ctl_log.exists(), ctl_log.read_text()
    used = utl_log.read_text()
    assert "snapshot status" in used and "snapshot restore" in used


def test_killed_after_swap_resumes_without_redoing(adopted: tuple[EtcdMember, Path]) -> None:
    member, cfg = adopted
    member.put("/k1", "before")
    snap = agent_json("--config", str(cfg), "snapshot")
    member.put("/k2", "after")
    state = Path(str(cfg.parent / "state"))
    op = "r-killed-after-swap"
    proc = subprocess.Popen([*AGENT, "--config", str(cfg), "restore", snap["path"], "--yes", "--op", op],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "swap" in steps_done(state, op), timeout=60, what="the swap step to be recorded")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=30)
    out = agent_json("--config", str(cfg), "restore", "--op", op, "--yes")
    assert out["state"] == "done"
    assert member.get("/k1") == "before" and member.get("/k2") is None
    finished = steps_done(state, op)
    for step in ("preflight", "prepare", "fence", "stop", "swap"):
        assert finished.count(step) == 1, finished
    assert finished[-1] == "unfence"


def test_stop_not_proven_swaps_nothing(adopted: tuple[EtcdMember, Path], tmp_path: Path) -> None:
    member, cfg = adopted
    snap = agent_json("--config", str(cfg), "snapshot")
    member.put("/k2", "after")
    live_inode = (member.data_dir / "member").stat().st_ino
    # Waits for etcd's lock on the db and grabs it the moment etcd dies: stop can then never be proven.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\ntime.sleep(600)\n",
         str(member.data_dir / "member" / "snap" / "db")])
    try:
        sections = agent_sections(member, tmp_path)
        sections["restore"] = {"stop_timeout": "3s", "start_timeout": "3s"}
        write_agent_config(cfg, sections)
        r = run_agent("--config", str(cfg), "restore", snap["path"], "--yes")
        assert r.returncode != 0
        assert "step stop failed" in r.stderr and "locked" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (member.data_dir / "member").stat().st_ino == live_inode
    assert not list(member.data_dir.glob("member.etcdguard-*"))
    assert not list(member.data_dir.glob(".etcdguard-*"))
    # The undo could not start etcd while the unknown process held the lock; once it is gone,
    # `rollback` of the half-done operation brings the node back on the untouched data.
    op = json.loads(run_agent("--config", str(cfg), "restores", "--json", check=True).stdout)[0]["op"]
    back = agent_json("--config", str(cfg), "rollback", op)
    assert back["state"] == "rolled-back"
    assert member.get("/k2") == "after"
    assert (member.data_dir / "member").stat().st_ino == live_inode


# -- static-pod runtime -------------------------------------------------------------------------


def test_static_pod_restore_and_rollback(etcd_factory: EtcdFactory, etcd_build: EtcdBuild, kubelet: TestKubelet,
                                         tmp_path: Path) -> None:
    member = etcd_factory.member(etcd_build, start=False)
    api_port = free_server_port()
    etcd_yaml = kubelet.manifests_dir / "etcd.yaml"
    api_json = kubelet.manifests_dir / "kube-apiserver.yaml"
    etcd_yaml.write_text(etcd_manifest_yaml(member, grace=5))
    api_json.write_text(apiserver_manifest_json(api_port, grace=5))
    member.wait_healthy(30)
    wait_until(lambda: livez(api_port) == "ok", timeout=30, what="the stand-in kube-apiserver")
    original = etcd_yaml.read_bytes()
    mode = stat.S_IMODE(etcd_yaml.stat().st_mode)

    sections = agent_sections(member, tmp_path, runtime="static-pod")
    sections["etcd"].update(runtime="static-pod", manifest=str(etcd_yaml))
    sections["apiserver"] = {"manifest": str(api_json), "health_url": f"http://127.0.0.1:{api_port}/livez"}
    sections["restore"] = {"stop_timeout": "30s", "start_timeout": "30s"}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)

    check_restore_and_rollback(member, cfg)
    # Manifests are back byte for byte, the kubelet stopped and started both pods.
    assert etcd_yaml.read_bytes() == original and stat.S_IMODE(etcd_yaml.stat().st_mode) == mode
    assert livez(api_port) == "ok"
    api_events = [e.what for e in kubelet.events_for("kube-apiserver.yaml")]
    assert api_events.count("started") >= 3  # initial, after restore, after rollback
    assert not list((tmp_path / "state").glob("parked-manifests/*.yaml"))
    assert os.path.exists(etcd_yaml)
