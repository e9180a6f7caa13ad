"""Single-member restore: etcdguard vs the manual runbook on the same data, in the same run.

Manual (docs' section 1, done as fast as a person could script it): stop etcd
(SIGTERM), `etcdutl snapshot restore` into a new dir, move the old data aside
and the new in, start etcd, wait until healthy. Downtime = all of it.
etcdguard: `etcdguard-agent restore SNAPSHOT --yes`; downtime = from the stop
step's start to the start step's end (read from the operation's journal).

    python tests/bench/bench_restore.py [--size-mb 300] [--build 3.5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import save
from tests.bench.workload import fill_member
from tests.helpers.agentconf import adopt, agent_sections, write_agent_config
from tests.helpers.etcd import EtcdMember, build_for, clean_env

AGENT = [sys.executable, "-m", "etcdguard.agent"]


def manual_restore(member: EtcdMember, snapshot: Path, tool: Path) -> float:
    started = time.perf_counter()
    member.stop(kill=False)
    target = member.dir / f"restored-{time.time_ns()}"
    argv = [str(tool), "snapshot", "restore", str(snapshot), "--data-dir", str(target), "--name", member.name,
            "--initial-cluster", member.initial_cluster, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster-token", f"manual-{time.time_ns()}"]
    subprocess.run(argv, check=True, capture_output=True, env=clean_env({"ETCDCTL_API": "3"}))
    os.rename(member.data_dir, member.dir / f"old-{time.time_ns()}")
    os.rename(target, member.data_dir)
    member.start()
    member.wait_healthy(60)
    return time.perf_counter() - started


def etcdguard_restore(cfg: Path, snapshot: Path) -> tuple[float, float]:
    started = time.perf_counter()
    # --force: the manual run before it restored the cluster under a new cluster id
    r = subprocess.run([*AGENT, "--config", str(cfg), "restore", str(snapshot), "--yes", "--force", "--json"],
                       capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"etcdguard restore failed: {r.stderr}")
    op = json.loads(r.stdout)["op"]
    journal = cfg.parent / "state" / "operations" / op / "journal.jsonl"
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    stop_at = next(e["t"] for e in events if e["event"] == "started" and e.get("step") == "stop")
    up_at = next(e["t"] for e in events if e["event"] == "finished" and e.get("step") == "start")
    return total, up_at - stop_at


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    build = build_for(args.build)
    if build is None:
        raise SystemExit(f"etcd {args.build} not installed (bash scripts/install-etcd.sh)")
    with tempfile.TemporaryDirectory(prefix="etcdguard-bench-") as tmp:
        work = Path(tmp)
        member = EtcdMember(build, work / "etcd")
        member.launch()
        try:
            keys = fill_member(member, args.size_mb * 1_000_000).keys
            snapshot = work / "snap.db"
            subprocess.run([str(build.etcdctl), f"--endpoints={member.client_url}", "snapshot", "save",
                            str(snapshot)], check=True, capture_output=True, env=clean_env({"ETCDCTL_API": "3"}))
            sections = agent_sections(member, work)
            sections["restore"] = {"bump_revision": 0}  # the manual runbook does not bump either
            cfg = write_agent_config(work / "agent.toml", sections)
            manual, totals, downtimes = [], [], []
            for _ in range(args.repeat):
                manual.append(manual_restore(member, snapshot, build.restore_tool))
                adopt(member, work / "etcd.pid")
                total, down = etcdguard_restore(cfg, snapshot)
                totals.append(total)
                downtimes.append(down)
                member.stop(kill=True)  # the agent's etcd: the harness restarts its own next round
                for old in list(member.data_dir.glob("member.etcdguard-*")):
                    shutil.rmtree(old)
                member.start()
                member.wait_healthy(60)
            m = statistics.median(manual)
            row: dict[str, Any] = {
                "etcd": build.version, "size_mb": args.size_mb, "snapshot_bytes": snapshot.stat().st_size,
                "keys": keys, "manual_downtime_seconds": round(m, 3),
                "etcdguard_total_seconds": round(statistics.median(totals), 3),
                "etcdguard_downtime_seconds": round(statistics.median(downtimes), 3),
                "downtime_ratio_etcdguard_to_manual": round(statistics.median(downtimes) / m, 3),
                "repeat": args.repeat,
            }
        finally:
            member.stop(kill=True)
    print(row)
    print(f"wrote {save(f'restore-{args.build}', {'rows': [row]})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
