"""Idle cost: an agent and a coordinator doing nothing but their own housekeeping, with a Prometheus
scrape of each metrics endpoint every 15 s.

Three etcd members on loopback (etcd 3.5 unless --build), an agent per member (process runtime,
CURVE, metrics on), one coordinator with a directory vault. Once the coordinator's first vault
pull is done and everything has settled, each daemon's CPU time (utime + stime from /proc) and
RSS are read over ``--seconds`` (60) while both endpoints are scraped every 15 s.
CPU % is of one core.

    python tests/bench/bench_idle.py [--seconds 60]     -> tests/bench/results/idle.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.bench.common import rss_kib, save  # noqa: E402
from tests.bench.workload import MB, fill_cluster  # noqa: E402
from tests.helpers.agentconf import write_agent_config  # noqa: E402
from tests.helpers.etcd import EtcdCluster, build_for  # noqa: E402
from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.restore_rig import RestoreRig  # noqa: E402

SCRAPE_EVERY = 15.0
CPU_TARGET_PERCENT = 0.5
RSS_TARGET_MB = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS   # utime, stime (fields 14 and 15)


def scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return len(resp.read())


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size-mb", type=int, default=20, help="data in the cluster (the vault pulls a snapshot)")
    args = ap.parse_args(argv)
    build = build_for(args.build) or build_for("3.4")
    if build is None:
        raise SystemExit("no etcd build found (bash scripts/install-etcd.sh)")
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-idle-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    ports: dict[str, int] = {}
    try:
        cluster = EtcdCluster(build, base / "etcd", size=3)
        cluster.launch()
        fill_cluster(cluster, args.size_mb * MB)
        rig = RestoreRig(cluster, base / "rig")
        rig.start()
        try:
            # the rig's agents have no metrics endpoint: each is restarted with one of its own
            for a in rig.agents:
                a.stop()
                ports[a.member.name] = free_port()
                a.sections["metrics"] = {"enabled": True, "listen": f"127.0.0.1:{ports[a.member.name]}"}
                write_agent_config(a.config_path, a.sections)
                a.start()
            assert rig.coordinator is not None and rig.coordinator.proc is not None
            deadline = time.monotonic() + 120
            while not rig.ctl_json("snapshots") and time.monotonic() < deadline:   # the first vault pull
                time.sleep(0.5)
            time.sleep(5.0)   # settle
            pids = {f"agent {a.member.name}": a.pid for a in rig.agents}
            pids["coordinator"] = rig.coordinator.proc.pid
            metric_ports = {**{f"agent {n}": p for n, p in ports.items()}, "coordinator": rig.metrics_port}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items() if p}
            started = time.monotonic()
            scrapes = 0
            next_scrape = started
            while True:
                now = time.monotonic()
                if now >= started + args.seconds:
                    break
                if now >= next_scrape:
                    for port in metric_ports.values():
                        scrape(port)
                    scrapes += 1
                    next_scrape += SCRAPE_EVERY
                time.sleep(max(0.0, min(next_scrape, started + args.seconds) - time.monotonic()))
            elapsed = time.monotonic() - started
            rows = []
            for name, pid in pids.items():
                assert pid
                cpu = (cpu_seconds(pid) - cpu0[name]) / elapsed * 100
                rss = (rss_kib(pid, "VmRSS") or 0) / 1024
                rows.append({"process": name, "cpu_percent": round(cpu, 3), "rss_mib": round(rss, 1),
                             "peak_rss_mib": round((rss_kib(pid, "VmHWM") or 0) / 1024, 1),
                             "cpu_target_percent": CPU_TARGET_PERCENT, "rss_target_mb": RSS_TARGET_MB,
                             "cpu_met": cpu < CPU_TARGET_PERCENT, "rss_met": rss * 1.048576 <= RSS_TARGET_MB})
                print(rows[-1], flush=True)
        finally:
            rig.stop()
            cluster.stop_all()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {"seconds": round(elapsed, 1), "scrapes_per_endpoint": scrapes,
                              "scrape_every": SCRAPE_EVERY, "etcd": build.version, "rows": rows}
    print(f"wrote {save('idle', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
