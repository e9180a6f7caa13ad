#!/usr/bin/env python3
"""`make demo`: a local 3-member etcd cluster backed up, broken and restored by etcdguard.

Three etcd members on 127.0.0.1 (free ports), an agent in front of each, one
coordinator with its vault, CURVE keys made for the occasion. A recognisable
data set is written and backed up into the vault; then a disaster (the data
set deleted, garbage written); then `etcdguardctl restore latest --plan` and
`--yes`; finally the data set is shown back on every member with one hashkv
and a new cluster id. Then continuous backup undoes one bad change: a few
good changes, one bad delete, `etcdguardctl history` to find it, `restore
--to-revision` just before it, and the good changes are back with the data.
Everything lives in a temp dir and everything started here is stopped again at
the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
AGENT = [PY, "-m", "etcdguard.agent"]
CTL = [PY, "-m", "etcdguard.coordinator.ctl"]
COORDINATOR = [PY, "-m", "etcdguard.coordinator.daemon_cli"]
MEMBERS = ("m1", "m2", "m3")
KEYS = 300


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
        time.sleep(0.1)
    raise SystemExit(f"demo: gave up waiting for {what}")


def etcd_bin() -> tuple[Path, Path, Path]:
    """etcd, etcdctl and the restore tool: 3.5 (with etcdutl) when installed, else the system's 3.4."""
    env_dir = os.environ.get("ETCDGUARD_ETCD35_BIN")
    for d in [Path(env_dir)] if env_dir else [ROOT / ".cache/etcd-3.5/usr/bin"]:
        if all((d / n).exists() for n in ("etcd", "etcdctl", "etcdutl")):
            return d / "etcd", d / "etcdctl", d / "etcdutl"
    etcd, ctl = shutil.which("etcd"), shutil.which("etcdctl")
    if not etcd or not ctl:
        raise SystemExit("demo: etcd is not installed; run `bash scripts/install-etcd.sh`")
    return Path(etcd), Path(ctl), Path(ctl)


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.etcd, self.etcdctl, self.tool = etcd_bin()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client = {m: free_port() for m in MEMBERS}
        self.peer = {m: free_port() for m in MEMBERS}
        self.agent_port = {m: free_port() for m in MEMBERS}
        self.coordinator_config = work / "coordinator.toml"

    # -- running things --------------------------------------------------------
    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(proc)
        return proc

    def etcdctl_(self, member: str, *args: str) -> str:
        r = subprocess.run([str(self.etcdctl), f"--endpoints=http://127.0.0.1:{self.client[member]}", *args],
                           env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=60,
                           check=False)
        if r.returncode != 0:
            raise SystemExit(f"demo: etcdctl {' '.join(args)} on {member} failed: {r.stderr.strip()}")
        return r.stdout

    def ctl(self, *args: str, show: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*CTL, *args, "--config", str(self.coordinator_config)]
        if show:
            print(f"$ etcdguardctl {' '.join(args)}", flush=True)
            r = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=600, check=False)
            sys.stdout.write(r.stdout)
        else:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if check and r.returncode != 0:
            raise SystemExit(f"demo: etcdguardctl {' '.join(args)} failed (exit {r.returncode})")
        return r

    def command(self, m: str) -> list[str]:
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in MEMBERS)
        return [str(self.etcd), f"--name={m}", f"--data-dir={self.work / m / 'data'}",
                f"--listen-client-urls=http://127.0.0.1:{self.client[m]}",
                f"--advertise-client-urls=http://127.0.0.1:{self.client[m]}",
                f"--listen-peer-urls=http://127.0.0.1:{self.peer[m]}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer[m]}",
                f"--initial-cluster={initial}", "--initial-cluster-token=demo", "--initial-cluster-state=new",
                "--heartbeat-interval=50", "--election-timeout=500"]

    # -- the story ---------------------------------------------------------------
    def keys(self) -> None:
        say("CURVE keys: one pair for the coordinator, one per agent (etcdguardctl keygen)")
        keys = self.work / "keys"
        for name in ("coordinator", *MEMBERS):
            subprocess.run([*CTL, "keygen", name, "--dir", str(keys), "--config", "/nonexistent"], check=True,
                           capture_output=True)
        for m in MEMBERS:
            authorized = self.work / m / "authorized"
            authorized.mkdir(parents=True, mode=0o700)
            shutil.copy(keys / "coordinator.key", authorized / "coordinator.key")
        print(f"wrote {', '.join(f'{n}.key' for n in ('coordinator', *MEMBERS))} (+ secrets, 0600) in {keys}")

    def start_etcd(self) -> None:
        say(f"a 3-member etcd cluster ({self.etcd}) on 127.0.0.1")
        for m in MEMBERS:
            (self.work / m).mkdir(exist_ok=True)
            proc = self.spawn(self.command(m), self.work / m / "etcd.log")
            (self.work / m / "etcd.pid").write_text(f"{proc.pid}\n")
        for m in MEMBERS:
            wait_for(f"etcd {m}", lambda m=m: self._healthy(m), 60)
        print(f"members m1..m3 healthy; client ports {', '.join(str(p) for p in self.client.values())}")

    def _healthy(self, m: str) -> bool:
        r = subprocess.run([str(self.etcdctl), f"--endpoints=http://127.0.0.1:{self.client[m]}", "endpoint",
                            "health"], env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, timeout=10,
                           check=False)
        return r.returncode == 0

    def write_data(self) -> None:
        say(f"a recognisable data set: {KEYS} keys under /registry/demo/")
        import etcd3

        client = etcd3.client(host="127.0.0.1", port=self.client["m1"])
        try:
            for i in range(KEYS):
                client.put(f"/registry/demo/key-{i:04d}", f"value {i} " + "x" * 200)
        finally:
            client.close()
        print(f"revision now {self.revision('m1')}")

    def revision(self, m: str) -> int:
        return int(json.loads(self.etcdctl_(m, "endpoint", "status", "-w", "json"))[0]["Status"]["header"]["revision"])

    def start_agents_and_coordinator(self) -> None:
        say("an agent per member and the coordinator (CURVE on loopback)")
        keys = self.work / "keys"
        for m in MEMBERS:
            config = self.work / m / "agent.toml"
            config.write_text(f"""
[etcd]
runtime = "process"
start_command = {json.dumps(self.command(m))}
pid_file = "{self.work / m / 'etcd.pid'}"
name = "{m}"
data_dir = "{self.work / m / 'data'}"
endpoints = ["http://127.0.0.1:{self.client[m]}"]
peer_url = "http://127.0.0.1:{self.peer[m]}"
restore_tool = "{self.tool}"

[backup]
dir = "{self.work / m / 'snapshots'}"
interval = "1h"

[server]
listen = "tcp://127.0.0.1:{self.agent_port[m]}"
secret_key = "{keys / (m + '.key_secret')}"
authorized_keys = "{self.work / m / 'authorized'}"

[metrics]
enabled = false

[state]
dir = "{self.work / m / 'state'}"
""")
            self.spawn([*AGENT, "--config", str(config), "run"], self.work / m / "agent.log")
        run = self.work / "run"
        run.mkdir(mode=0o750)
        members = "".join(f'[[members]]\nname = "{m}"\nagent = "tcp://127.0.0.1:{self.agent_port[m]}"\n'
                          f'public_key = "{keys / (m + ".key")}"\n\n' for m in MEMBERS)
        self.coordinator_config.write_text(f"""
[coordinator]
state_dir = "{self.work / 'coordinator'}"
control_socket = "{run / 'coordinator.sock'}"
secret_key = "{keys / 'coordinator.key_secret'}"
request_timeout = "3s"

[vault]
dir = "{self.work / 'vault'}"
interval = "1h"

[continuous]
flush = "1s"

[scratch]
etcd = "{self.etcd}"
tool = "{self.tool}"

[metrics]
enabled = false

{members}""")
        for m in MEMBERS:
            wait_for(f"agent {m}", lambda m=m: "agent ready" in (self.work / m / "agent.log").read_text(), 60)
        self.spawn(COORDINATOR + ["--config", str(self.coordinator_config)], self.work / "coordinator.log")
        wait_for("the coordinator", lambda: self.ctl("snapshots", show=False, check=False).returncode == 0, 60)
        self.ctl("status")

    def disaster(self) -> None:
        say("disaster: the data set deleted, garbage written")
        self.etcdctl_("m2", "del", "--prefix", "/registry/demo/")
        self.etcdctl_("m2", "put", "/registry/demo/garbage", "oops")
        for m in MEMBERS:
            print(f"  {m}: {self.count(m)} key(s) under /registry/demo/")

    def count(self, m: str) -> int:
        return len([ln for ln in self.etcdctl_(m, "get", "--prefix", "/registry/demo/", "--keys-only").splitlines()
                    if ln.strip()])

    def show_restored(self, summary: dict[str, Any]) -> None:
        say("verified by etcdctl on every member")
        revisions = {m: self.revision(m) for m in MEMBERS}
        rev = min(revisions.values())
        hashes = {m: json.loads(self.etcdctl_(m, "endpoint", "hashkv", f"--rev={rev}", "-w", "json"))[0]["HashKV"]
                  ["hash"] for m in MEMBERS}
        ids = {m: json.loads(self.etcdctl_(m, "endpoint", "status", "-w", "json"))[0]["Status"]["header"]
               ["cluster_id"] for m in MEMBERS}
        counts = {m: self.count(m) for m in MEMBERS}
        for m in MEMBERS:
            print(f"  {m}: {counts[m]} keys under /registry/demo/, revision {revisions[m]}, hashkv {hashes[m]} "
                  f"at revision {rev}, cluster id {ids[m]:x}")
        problems = []
        if set(counts.values()) != {KEYS}:
            problems.append(f"expected {KEYS} keys on every member, found {counts}")
        if len(set(hashes.values())) != 1:
            problems.append(f"hashkv differs: {hashes}")
        if len(set(ids.values())) != 1:
            problems.append(f"cluster ids differ: {ids}")
        if problems:
            raise SystemExit("demo: " + "; ".join(problems))
        print(f"the data set is back on all 3 members, one hashkv, new cluster id {summary.get('new_cluster_id')} "
              f"(was {summary.get('old_cluster_id')}); downtime {summary.get('downtime_seconds')} s of "
              f"{summary.get('total_seconds')} s")

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.ctl("status", "--json", show=False).stdout))

    def undo_a_bad_change(self) -> None:
        """Continuous backup: good changes, one bad delete, history, a restore to just before it."""
        say("continuous backup: every change is captured; wait for the window of the restored cluster")
        cluster = wait_for("the capture of the restored cluster", lambda: (c := self.status()["continuous"])
                           ["running"] and c["cluster_id"], 60)
        wait_for("its first full snapshot", lambda: any(w["cluster_id"] == cluster for w in
                                                        self.status()["continuous"]["window"]), 60)
        say("a few good changes, then one bad delete")
        for i in range(1, 4):
            print(f"$ etcdctl put /registry/configmaps/demo/settings-{i} ...")
            self.etcdctl_("m1", "put", f"/registry/configmaps/demo/settings-{i}", f"good change {i}")
        print("$ etcdctl del --prefix /registry/demo/")
        self.etcdctl_("m1", "del", "--prefix", "/registry/demo/")
        deleted_at = self.revision("m1")
        wait_for("the delete in the vault", lambda: (self.status()["continuous"]["written_revision"] or 0)
                 >= deleted_at, 30)
        say("find the moment: etcdguardctl history")
        self.ctl("history", "/registry/configmaps/demo/")
        self.ctl("history", "/registry/demo/", "--limit", "3")
        good = json.loads(self.ctl("history", "/registry/configmaps/demo/", "--json", show=False).stdout)["changes"]
        at_ms = max(good, key=lambda c: c["revision"])["at_ms"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_ms // 1000)) + f".{at_ms % 1000:03d}Z"
        say("or by time: the moment of the last good change")
        self.ctl("restore", "--to-time", stamp, "--plan")
        say(f"restore to revision {deleted_at - 1}, just before the delete")
        self.ctl("restore", "--to-revision", str(deleted_at - 1), "--plan")
        print(f"$ etcdguardctl restore --to-revision {deleted_at - 1} --yes", flush=True)
        r = subprocess.run([*CTL, "restore", "--to-revision", str(deleted_at - 1), "--yes", "--json", "--config",
                            str(self.coordinator_config)], stdout=subprocess.PIPE, text=True, timeout=600,
                           check=False)
        summary = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
        if r.returncode != 0:
            raise SystemExit(f"demo: the point-in-time restore failed (exit {r.returncode}): {summary.get('error')}")
        print(f"restore {summary['op']}: {summary['state']}, total {summary.get('total_seconds')} s")
        good = {m: len([ln for ln in self.etcdctl_(m, "get", "--prefix", "/registry/configmaps/demo/",
                                                   "--keys-only").splitlines() if ln.strip()]) for m in MEMBERS}
        self.show_restored(summary)
        if set(good.values()) != {3}:
            raise SystemExit(f"demo: expected the 3 good changes on every member, found {good}")
        print("and the 3 good changes made after the backup are there too, on every member")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        # etcd restarted by the agents' process runtime is not our child: its pid is in the pid file
        pids = []
        for m in MEMBERS:
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((self.work / m / "etcd.pid").read_text().split()[0]))
        for pid in [p.pid for p in self.procs] + pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="etcdguard-demo-"))
    demo = Demo(work)
    try:
        print(f"etcdguard demo in {work} (everything is removed at the end)")
        demo.keys()
        demo.start_etcd()
        demo.write_data()
        demo.start_agents_and_coordinator()
        say("back up into the vault (etcdguardctl backup)")
        demo.ctl("backup")
        demo.ctl("snapshots")
        demo.disaster()
        say("the restore plan (changes nothing)")
        demo.ctl("restore", "latest", "--plan")
        say("the restore: every member from the same snapshot, one token, one bump")
        print("$ etcdguardctl restore latest --yes", flush=True)
        r = subprocess.run([*CTL, "restore", "latest", "--yes", "--json", "--config", str(demo.coordinator_config)],
                           stdout=subprocess.PIPE, text=True, timeout=600, check=False)
        summary = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
        if r.returncode != 0:
            raise SystemExit(f"demo: the restore failed (exit {r.returncode}): {summary.get('error')}")
        from etcdguard.coordinator.ctl.restore import render_summary

        print(render_summary(summary))
        demo.show_restored(summary)
        demo.undo_a_bad_change()
        demo.ctl("restores")
        say(f"done in {time.monotonic() - started:.0f}s")
        return 0
    finally:
        demo.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        print(f"\ncleaned up: etcd, agents and coordinator stopped, {work} removed")


if __name__ == "__main__":
    sys.exit(main())
