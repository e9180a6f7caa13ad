#!/usr/bin/env python3
"""`make demo`: a throwaway local etcd, backed up, broken and restored by etcdguard.

Everything lives in a temp dir on 127.0.0.1 with free ports, and everything
started here is stopped again at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from etcdguard.agent.base.errors import EtcdguardError
from etcdguard.agent.config import load_agent_config
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.etcd.client import EtcdClient
from etcdguard.agent.runtime.factory import make_runtime

ROOT = Path(__file__).resolve().parents[1]
AGENT = [sys.executable, "-m", "etcdguard.agent"]
KEYS = 200


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise SystemExit(f"demo: gave up waiting for {what}")


def etcd_bin() -> tuple[Path, Path]:
    """etcd and the restore tool: 3.5 (with etcdutl) when installed, else the system's 3.4."""
    env_dir = os.environ.get("ETCDGUARD_ETCD35_BIN")
    for d in [Path(env_dir)] if env_dir else [ROOT / ".cache/etcd-3.5/usr/bin"]:
        if (d / "etcd").exists() and (d / "etcdutl").exists():
            return d / "etcd", d / "etcdutl"
    etcd, ctl = shutil.which("etcd"), shutil.which("etcdctl")
    if not etcd or not ctl:
        raise SystemExit("demo: etcd is not installed; run `bash scripts/install-etcd.sh`")
    return Path(etcd), Path(ctl)


def agent(*args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=300, check=False)
    if show:
        print(f"$ etcdguard-agent {' '.join(args)}")
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"demo: etcdguard-agent {args[2] if len(args) > 2 else args} failed ({r.returncode})")
    return r


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="etcdguard-demo-"))
    etcd, tool = etcd_bin()
    client, peer, metrics = free_port(), free_port(), free_port()
    data = work / "etcd-data"
    command = [str(etcd), "--name=demo", f"--data-dir={data}",
               f"--listen-client-urls=http://127.0.0.1:{client}", f"--advertise-client-urls=http://127.0.0.1:{client}",
               f"--listen-peer-urls=http://127.0.0.1:{peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
               f"--initial-cluster=demo=http://127.0.0.1:{peer}", "--initial-cluster-state=new"]
    config = work / "agent.toml"
    config.write_text(f"""
[etcd]
runtime = "process"
start_command = {json.dumps(command)}
pid_file = "{work}/etcd.pid"
name = "demo"
data_dir = "{data}"
endpoints = ["http://127.0.0.1:{client}"]
peer_url = "http://127.0.0.1:{peer}"
restore_tool = "{tool}"

[backup]
dir = "{work}/snapshots"
interval = "5s"
keep = 3

[server]
enabled = false

[metrics]
listen = "127.0.0.1:{metrics}"

[state]
dir = "{work}/state"
""")
    cfg = load_agent_config(config)
    runtime = make_runtime(cfg, discover(cfg), cfg.state.dir)
    daemon: subprocess.Popen[str] | None = None
    endpoint = f"http://127.0.0.1:{client}"
    try:
        say(f"starting a throwaway etcd ({etcd}) on 127.0.0.1:{client} in {work}")
        runtime.etcd.start(30)
        etcd_client = wait_for("etcd", lambda: _try_client(endpoint))
        for i in range(KEYS):
            etcd_client.put(f"/registry/demo/key-{i:04d}", f"value {i}")
        print(f"wrote {KEYS} keys; revision {etcd_client.status().revision}")

        say("etcdguard-agent check")
        agent("--config", str(config), "check")

        say("running the agent daemon (snapshot every 5s, keep 3)")
        daemon = subprocess.Popen([*AGENT, "--config", str(config), "run"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        store = work / "snapshots"
        wait_for("two scheduled snapshots", lambda: len(list(store.glob("snap-*.db.json"))) >= 2, 60)
        agent("--config", str(config), "snapshots")
        newest = sorted(store.glob("snap-*.db"))[-1]
        agent("verify", str(newest))
        say(f"metrics from http://127.0.0.1:{metrics}/metrics (a few lines)")
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith(("etcdguard_backup_age", "etcdguard_backup_last", "etcdguard_snapshots_retained",
                                "etcdguard_etcd_up")):
                print("  " + line)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        daemon = None

        say("disaster: every key deleted, garbage written")
        etcd_client.close()
        etcd_client = _try_client(endpoint) or wait_for("etcd", lambda: _try_client(endpoint))
        subprocess.run([shutil.which("etcdctl") or "etcdctl", f"--endpoints={endpoint}", "del", "--prefix",
                        "/registry/demo/"], env={**os.environ, "ETCDCTL_API": "3"}, check=True,
                       capture_output=True)
        etcd_client.put("/registry/demo/garbage", "oops")
        print(f"keys under /registry/demo/ now: {_count(endpoint)}")

        say("restore plan (changes nothing)")
        agent("--config", str(config), "restore", "latest", "--plan")
        say("restore")
        r = agent("--config", str(config), "restore", "latest", "--yes", "--json", show=False)
        outcome = json.loads(r.stdout)
        sys.stderr.write(r.stderr)
        status = _try_client(endpoint).status()
        keys = _count(endpoint)
        print(f"restore {outcome['op']}: {outcome['state']}; keys under /registry/demo/: {keys}; "
              f"revision {status.revision}")
        if keys != KEYS:
            raise SystemExit(f"demo: expected {KEYS} keys after the restore, found {keys}")
        agent("--config", str(config), "restores")
        say("verified: every key is back; the pre-restore data is kept until `cleanup OP --yes`")
        return 0
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        try:
            runtime.etcd.stop(30)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"\ncleaned up: etcd stopped, {work} removed")


def _try_client(endpoint: str) -> EtcdClient | None:
    c = EtcdClient(endpoint, timeout=2)
    try:
        if c.status().healthy:
            return c
    except EtcdguardError:
        pass  # still starting
    c.close()
    return None


def _count(endpoint: str) -> int:
    out = subprocess.run([shutil.which("etcdctl") or "etcdctl", f"--endpoints={endpoint}", "get", "--prefix",
                          "/registry/demo/", "--keys-only"], env={**os.environ, "ETCDCTL_API": "3"},
                         capture_output=True, text=True, check=True)
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


if __name__ == "__main__":
    sys.exit(main())
