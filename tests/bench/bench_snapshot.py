"""Snapshot time and memory: `etcdguard-agent snapshot` vs the manual `etcdctl snapshot save` +
`snapshot status`, on the same member and data, in the same run.

    python tests/bench/bench_snapshot.py [--sizes-mb 100,300,1000] [--build 3.5] [--repeat 3]

One member grows through the sizes (the seeded workload of tests/bench/workload.py, topped up
between sizes); at each size the runs alternate etcdctl, etcdguard, etcdctl, ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import run_measured, save, spread, timed
from tests.bench.workload import MB, fill_member
from tests.helpers.etcd import EtcdMember, build_for, clean_env

AGENT = [sys.executable, "-m", "etcdguard.agent"]
# The daemon's case: a warm process (imports done) takes the snapshot; only that is timed.
WARM = """
import sys, time
from pathlib import Path
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.snapshots.take import Source, save_to_file
from etcdguard.common.snapshot.tools import find_tool
tool = find_tool()
t = time.perf_counter()
save_to_file(Source(sys.argv[1], ClientTLS()), Path(sys.argv[2]), tool=tool)
print(time.perf_counter() - t)
"""


WARM_EVERY_REPEAT_MB = 300


def bench_size(member: EtcdMember, size_mb: int, repeat: int, work: Path, keys: int) -> dict[str, Any]:
    build = member.build
    env = clean_env({"ETCDCTL_API": "3"})
    path_env = {"PATH": f"{build.bin_dir}:{clean_env()['PATH']}"}
    status_tool = str(build.etcdutl or build.etcdctl)
    manual, agent, warm, rss = [], [], [], []
    size = 0
    for i in range(repeat):
        out = work / f"manual-{size_mb}-{i}.db"
        t = timed([str(build.etcdctl), f"--endpoints={member.client_url}", "snapshot", "save", str(out)], env)
        t += timed([status_tool, "snapshot", "status", str(out), "-w", "json"], env)
        manual.append(t)
        size = out.stat().st_size
        out.unlink()
        mine = work / f"agent-{size_mb}-{i}.db"
        r = run_measured([*AGENT, "snapshot", f"--endpoints={member.client_url}", "--output", str(mine),
                          "--json"], env=path_env)
        if r.returncode != 0:
            raise SystemExit(f"agent snapshot failed: {r.stderr}")
        agent.append(r.seconds)
        if r.peak_rss_mib is not None:
            rss.append(r.peak_rss_mib)
        mine.unlink()
        if i == 0 or size_mb <= WARM_EVERY_REPEAT_MB:   # one warm run at 1 GB keeps make bench in 25 min
            w = subprocess.run([sys.executable, "-c", WARM, member.client_url, str(mine)], check=True,
                               capture_output=True, text=True, env={**clean_env(), **path_env})
            warm.append(float(w.stdout.strip().splitlines()[-1]))
            mine.unlink()
    m, a, w_med = statistics.median(manual), statistics.median(agent), statistics.median(warm)
    return {
        "etcd": build.version, "size_mb": size_mb, "snapshot_bytes": size, "keys": keys,
        "manual_seconds": round(m, 3), "agent_seconds": round(a, 3),
        "manual_range": spread(manual), "agent_range": spread(agent),
        "time_ratio_agent_to_manual": round(a / m, 3),
        "agent_in_process_seconds": round(w_med, 3), "in_process_ratio_to_manual": round(w_med / m, 3),
        "agent_mb_per_s": round(size / a / 1e6, 1), "manual_mb_per_s": round(size / m / 1e6, 1),
        "agent_peak_rss_mib": max(rss) if rss else None, "repeat": repeat, "in_process_runs": len(warm),
    }


STARTUP = ("from etcdguard.agent import cli; cli._load_extensions(); "
           "from etcdguard.agent.snapshots import take; from etcdguard.common.snapshot import tools")


def startup_seconds(repeat: int = 5) -> dict[str, float]:
    """The command's fixed cost: the interpreter alone, and with the snapshot command's imports."""
    def best(code: str) -> float:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    bare, full = best("pass"), best(STARTUP)
    return {"interpreter_seconds": round(bare, 3), "with_imports_seconds": round(full, 3),
            "imports_seconds": round(full - bare, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes-mb", default="100,300,1000")
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    build = build_for(args.build)
    if build is None:
        raise SystemExit(f"etcd {args.build} not installed (bash scripts/install-etcd.sh)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="etcdguard-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
        member = EtcdMember(build, Path(tmp) / "etcd")
        member.launch()
        try:
            present, keys = 0, 0
            for n, size in enumerate(int(s) for s in args.sizes_mb.split(",")):
                loaded = fill_member(member, size * MB - present, seed=n)
                present += loaded.value_bytes
                keys += loaded.keys
                row = bench_size(member, size, args.repeat, Path(tmp), keys)
                print(row, flush=True)
                rows.append(row)
        finally:
            member.stop(kill=True)
    startup = startup_seconds()
    print(f"start-up: {startup}")
    path = save(f"snapshot-{args.build}", {"rows": rows, "startup": startup})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
