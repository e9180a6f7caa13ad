"""Files, disks and users (issue 9 items 8, 13, 14 and 16): a full disk, a sidecar that cannot be written,
an ``--output`` that is not a file, a metrics port in use, commands run as a user without permissions, a
panicking etcd tool, and the vault's temp names. Real etcd, the real agent and coordinator commands, real
tmpfs mounts and a real unprivileged user (``nobody``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import ToolError
from etcdguard.common.snapshot.bbolt import read_meta
from etcdguard.common.snapshot.tools import probe_tool, snapshot_status
from etcdguard.coordinator.vault.store import Incoming, Vault

from tests.helpers.agentconf import AGENT, agent_sections, render_toml, write_agent_config
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import DAEMON, Coordinator, scrape
from tests.helpers.etcd import EtcdMember, run_etcdctl
from tests.helpers.net import free_port, wait_until

PAGE = 4096
ONLY_34 = pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)


@contextlib.contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes (whole pages) at ``where``: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def agent(*args: str, user: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] if user else []
    return subprocess.run([*prefix, *AGENT, *args], capture_output=True, text=True, timeout=timeout, check=False)


def one_line(r: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and one error line holding ``words``, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1, r.stderr[-3000:]
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def store_config(member: EtcdMember, workdir: Path, store: Path) -> Path:
    sections = agent_sections(member, workdir, runtime=None)
    sections["backup"]["dir"] = str(store)
    sections["bundle"] = {"enabled": False}
    return write_agent_config(workdir / "agent.toml", sections)


# -- item 8: a full disk --------------------------------------------------------------------------


@ONLY_34
def test_a_snapshot_on_a_full_disk_is_one_line_and_leaves_nothing(etcd_member: EtcdMember, tmp_path: Path) -> None:
    for i in range(20):
        etcd_member.put(f"/fill/{i}", "v" * 10_000)   # a snapshot well above the disk's 64 KiB
    with tmpfs(tmp_path / "disk", 16 * PAGE) as disk:
        cfg = store_config(etcd_member, tmp_path, disk / "snapshots")
        r = agent("--config", str(cfg), "snapshot")
        one_line(r, 1, "No space left on device", "the filesystem is full")
        assert os.listdir(disk / "snapshots") == []
        r = agent("--config", str(cfg), "snapshot", "--output", str(disk / "out.db"))
        one_line(r, 1, "No space left on device", str(disk))
        assert sorted(os.listdir(disk)) == ["snapshots"]


# -- item 13: the sidecar cannot be written -------------------------------------------------------


@ONLY_34
def test_a_snapshot_whose_sidecar_cannot_be_written_is_removed_at_once(etcd_member: EtcdMember,
                                                                        tmp_path: Path) -> None:
    probe = tmp_path / "probe.db"
    run_etcdctl(etcd_member.build, ["--endpoints", etcd_member.client_url, "snapshot", "save", str(probe)])
    pages = -(-probe.stat().st_size // PAGE)
    # Room for the snapshot's pages and not one more: its sidecar (one more page) hits ENOSPC.
    with tmpfs(tmp_path / "disk", pages * PAGE) as disk:
        cfg = store_config(etcd_member, tmp_path, disk / "snapshots")
        r = agent("--config", str(cfg), "snapshot")
        one_line(r, 1, "metadata could not be written", "removed again", "No space left on device")
        assert os.listdir(disk / "snapshots") == []   # right away, not at the next start
        with open(disk / "free-again", "wb") as fh:   # the space is really free again
            fh.write(b"x" * (pages - 1) * PAGE)


# -- item 14: --output onto something that is not a file ---------------------------------------


@ONLY_34
def test_output_refuses_a_fifo_a_symlink_and_a_directory(etcd_member: EtcdMember, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fifo = out / "fifo"
    os.mkfifo(fifo)
    target = out / "precious"
    target.write_bytes(b"keep me")
    link = out / "link.db"
    link.symlink_to(target)
    ep = ["--endpoints", etcd_member.client_url]
    one_line(agent("snapshot", *ep, "--output", str(fifo)), 2, "exists and is a FIFO", "refusing to replace it")
    one_line(agent("snapshot", *ep, "--output", str(link)), 2, "exists and is a symbolic link")
    one_line(agent("snapshot", *ep, "--output", str(out)), 1, "is a directory")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.path.islink(link) and target.read_bytes() == b"keep me"
    assert sorted(os.listdir(out)) == ["fifo", "link.db", "precious"]   # nothing taken, no temp left
    # a regular file is replaced, as etcdctl snapshot save does
    regular = out / "old.db"
    regular.write_bytes(b"old")
    r = agent("snapshot", *ep, "--output", str(regular), "--json")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(regular.read_bytes()).hexdigest() == json.loads(r.stdout)["sha256"]


def test_commit_temp_never_renames_over_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    temp = fsutil.temp_path(tmp_path)
    temp.write_bytes(b"data")
    with pytest.raises(Exception, match="exists and is a FIFO"):
        fsutil.commit_temp(temp, fifo)
    with pytest.raises(Exception, match="exists and is a FIFO"):
        fsutil.atomic_write_bytes(fifo, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- item 8: the metrics port in use ------------------------------------------------------------


def test_a_metrics_port_in_use_is_exit_2_at_start_and_kept_on_reload(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        sections: dict[str, dict[str, Any]] = {
            "etcd": {"name": "m1", "data_dir": str(tmp_path / "data"),
                     "endpoints": [f"http://127.0.0.1:{free_port()}"]},
            "backup": {"dir": str(tmp_path / "snapshots"), "interval": "1h"},
            "server": {"enabled": False}, "metrics": {"listen": busy}, "state": {"dir": str(tmp_path / "state")},
        }
        cfg = write_agent_config(tmp_path / "agent.toml", sections)
        one_line(agent("--config", str(cfg), "run"), 2, f"metrics.listen {busy}: cannot listen",
                 "Address already in use")
        run = tmp_path / "run"
        run.mkdir(mode=0o750)
        ccfg = tmp_path / "coordinator.toml"
        ccfg.write_text(render_toml({
            "coordinator": {"state_dir": str(tmp_path / "cstate"), "insecure": True,
                            "control_socket": str(run / "c.sock"), "request_timeout": "1s"},
            "vault": {"dir": str(tmp_path / "vault")}, "metrics": {"listen": busy},
        }) + '[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\n')
        r = subprocess.run([*DAEMON, "--config", str(ccfg)], capture_output=True, text=True, timeout=60,
                           check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert f"metrics.listen {busy}: cannot listen: Address already in use" in r.stderr

        # A running agent asked to move its metrics to the taken port keeps serving on the old one.
        good = free_port()
        sections["metrics"] = {"listen": f"127.0.0.1:{good}"}
        write_agent_config(cfg, sections)
        log = tmp_path / "agent.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL, stderr=fh)
        try:
            wait_until(lambda: "agent ready" in log.read_text(), 30, what="the agent to start")
            sections["metrics"] = {"listen": busy}
            write_agent_config(cfg, sections)
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload failed, kept the running configuration: metrics.listen" in log.read_text(),
                       30, what="the reload to be refused")
            assert proc.poll() is None
            assert "etcdguard_backup_interval_seconds" in scrape(good)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        assert proc.returncode == 0, log.read_text()[-3000:]

        # The coordinator the same way: the new port is taken, the old one goes on serving.
        cgood = free_port()
        ccfg.write_text(ccfg.read_text().replace(busy, f"127.0.0.1:{cgood}"))
        coord = Coordinator(ccfg, tmp_path / "coordinator.log")
        coord.start()
        try:
            coord.wait_ready()
            ccfg.write_text(ccfg.read_text().replace(f"127.0.0.1:{cgood}", busy))
            assert coord.proc is not None
            coord.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload failed, kept the running configuration: metrics.listen" in coord.log_tail(),
                       30, what="the coordinator's reload to be refused")
            assert "etcdguard_vault_interval_seconds" in scrape(cgood)
        finally:
            assert coord.stop() == 0, coord.log_tail()


# -- item 8: commands run by a user who may not ---------------------------------------------------


@ONLY_34
def test_commands_as_a_user_without_permissions(etcd_member: EtcdMember) -> None:
    # pytest's tmp_path is private to root: this test needs a directory "nobody" can traverse.
    base = Path(tempfile.mkdtemp(prefix="etcdguard-nobody-"))
    try:
        base.chmod(0o755)
        private = base / "private"
        private.mkdir(mode=0o700)
        sections = agent_sections(etcd_member, private, runtime=None)
        sections["bundle"] = {"enabled": False}
        cfg = write_agent_config(base / "agent.toml", sections)
        cfg.chmod(0o644)
        r = agent("--config", str(cfg), "check", "--json", user="nobody")
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        failed = {c["name"]: c["detail"] for c in json.loads(r.stdout)["checks"] if not c["ok"]}
        assert {"data dir", "backup dir", "state dir", "restore records"} <= set(failed), failed
        assert "permission denied" in failed["backup dir"]
        assert failed.keys() <= {"data dir", "backup dir", "state dir", "restore records", "restore tool"}, failed
        for args in (["snapshot"], ["snapshots"], ["restores"], ["restore", "latest", "--plan"], ["run"],
                     ["rollback", "r1"], ["snapshot", "--output", str(private / "x.db")]):
            one_line(agent("--config", str(cfg), *args, user="nobody"), 2, "Permission denied", "run it as root")
        assert not (private / "snapshots").exists() and not (private / "x.db").exists()
    finally:
        shutil.rmtree(base)


# -- item 16: what a panicking etcd tool said, and the vault's temp names ------------------------


def test_a_panicking_tool_is_reported_by_its_reason(etcd_member: EtcdMember, tmp_path: Path) -> None:
    snap = tmp_path / "snap.db"
    run_etcdctl(etcd_member.build, ["--endpoints", etcd_member.client_url, "snapshot", "save", str(snap)])
    root = read_meta(snap.read_bytes()[:2 * PAGE]).root
    with open(snap, "r+b") as fh:   # the root bucket's page: bbolt asserts and panics reading it
        fh.seek(root * PAGE)
        fh.write(b"\xff" * PAGE)
    tool = probe_tool(etcd_member.build.restore_tool)
    raw = subprocess.run([str(tool.path), "snapshot", "status", str(snap), "-w", "json"], env=tool.env(),
                         capture_output=True, text=True, timeout=60, check=False)
    assert raw.returncode != 0 and "goroutine" in raw.stderr, raw.stderr   # a Go panic with its trace
    with pytest.raises(ToolError) as info:
        snapshot_status(tool, snap)
    message = str(info.value)
    assert "panic: " in message and "goroutine" not in message and ".go:" not in message, message
    first_panic = next(ln for ln in raw.stderr.splitlines() if ln.startswith("panic: "))
    assert first_panic.split(":")[1] in message


@ONLY_34
def test_vault_temp_names_carry_the_prefix_once(etcd_member: EtcdMember, tmp_path: Path) -> None:
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    proc = AgentProcess(etcd_member, tmp_path / "agent", authorized=[ckeys.public_path])
    assert proc.seeded is not None
    vault = Vault(tmp_path / "vault")
    vault.prepare()
    incoming = Incoming.from_agent(etcd_member.name, proc.seeded.to_json())
    seen: list[str] = []

    def fetch(dest: Path) -> None:
        with proc.client(ckeys) as client:
            client.fetch_snapshot(incoming.original_name, dest, expected_sha256=incoming.sha256,
                                  expected_size=incoming.size,
                                  progress=lambda done, total: seen.extend(os.listdir(vault.work_dir)))

    proc.start()
    try:
        entry, pulled = vault.pull(incoming, fetch)
    finally:
        proc.stop()
    assert pulled and entry.sha256 == incoming.sha256
    temps = [n for n in seen if n.startswith(fsutil.TEMP_PREFIX)]
    assert temps, seen
    assert all(n.count(fsutil.TEMP_PREFIX) == 1 for n in temps), temps
