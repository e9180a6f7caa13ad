"""Snapshot time and memory: `etcdguard-agent snapshot` vs the manual `etcdctl snapshot save` +
`snapshot status`, on the same member and data, in the same run.

    python tests/bench/bench_snapshot.py [--sizes-mb 100,300] [--build 3.5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import run_measured, save, timed
from tests.helpers.etcd import EtcdMember, build_for, clean_env, load_data

AGENT = [sys.executable, "-m", "etcdguard.agent"]
# The daemon's case: a warm process (imports done) takes the snapshot; only that is timed.
WARM = """
import sys, time
from pathlib import Path
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.snapshots.take import Source, save_to_file
from etcdguard.agent.etcd.tools import find_tool
tool = find_tool()
t = time.perf_counter()
save_to_file(Source(sys.argv[1], ClientTLS()), Path(sys.argv[2]), tool=tool)
print(time.perf_counter() - t)
"""


def bench_size(build_label: str, size_mb: int, repeat: int, work: Path) -> dict[str, Any]:
    build = build_for(build_label)
    if build is None:
        raise SystemExit(f"etcd {build_label} not installed (bash scripts/install-etcd.sh)")
    member = EtcdMember(build, work / f"etcd-{size_mb}")
    member.launch()
    try:
        keys = load_data(member, size_mb * 1024 * 1024)
        env = clean_env({"ETCDCTL_API": "3"})
        status_tool = str(build.etcdutl or build.etcdctl)
        manual, agent, warm, rss = [], [], [], []
        for i in range(repeat):
            out = work / f"manual-{size_mb}-{i}.db"
            t = timed([str(build.etcdctl), f"--endpoints={member.client_url}", "snapshot", "save", str(out)], env)
            t += timed([status_tool, "snapshot", "status", str(out), "-w", "json"], env)
            manual.append(t)
            size = out.stat().st_size
            out.unlink()
            mine = work / f"agent-{size_mb}-{i}.db"
            r = run_measured([*AGENT, "snapshot", f"--endpoints={member.client_url}", "--output", str(mine),
                              "--json"], env={"PATH": f"{build.bin_dir}:{clean_env()['PATH']}"})
            if r.returncode != 0:
                raise SystemExit(f"agent snapshot failed: {r.stderr}")
            agent.append(r.seconds)
            if r.peak_rss_mib is not None:
                rss.append(r.peak_rss_mib)
            mine.unlink()
            w = subprocess.run([sys.executable, "-c", WARM, member.client_url, str(mine)], check=True,
                               capture_output=True, text=True,
                               env={**clean_env(), "PATH": f"{build.bin_dir}:{clean_env()['PATH']}"})
            warm.append(float(w.stdout.strip().splitlines()[-1]))
            mine.unlink()
        m, a, w_med = statistics.median(manual), statistics.median(agent), statistics.median(warm)
        return {
            "etcd": build.version, "size_mb": size_mb, "snapshot_bytes": size, "keys": keys,
            "manual_seconds": round(m, 3), "agent_seconds": round(a, 3),
            "time_ratio_agent_to_manual": round(a / m, 3),
            "agent_in_process_seconds": round(w_med, 3), "in_process_ratio_to_manual": round(w_med / m, 3),
            "agent_mb_per_s": round(size / a / 1e6, 1), "manual_mb_per_s": round(size / m / 1e6, 1),
            "agent_peak_rss_mib": max(rss) if rss else None, "repeat": repeat,
        }
    finally:
        member.stop(kill=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes-mb", default="100,300")
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="etcdguard-bench-") as tmp:
        for size in [int(s) for s in args.sizes_mb.split(",")]:
            row = bench_size(args.build, size, args.repeat, Path(tmp))
            print(row, flush=True)
            rows.append(row)
    path = save(f"snapshot-{args.build}", {"rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
