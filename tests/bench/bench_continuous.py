"""Continuous backup: capture lag and cost under load, replay speed, point-in-time restore vs plain restore.

A 3-member etcd cluster with agents and a coordinator (tests/helpers/restore_rig.py, product defaults
for [continuous]: flush 5 s, segment_size 4 MiB), filled with the seeded workload to ``--size-mb``, one
full snapshot in the vault (the base). Then:

1. Load: ``--rate`` writes a second of ~``--value-size`` bytes (one put each, Kubernetes-like keys) for
   ``--seconds``, from a separate process (4 threads, paced). Meanwhile, every second: the coordinator's
   ``etcdguard_continuous_lag_seconds`` (the vault's lag: since it last held every change etcd had made)
   and the CPU time and RSS of every agent and the coordinator. Afterwards, for every 50th write: when
   its segment was written to the (directory) vault, from the segment file's mtime, minus when the
   write returned to the client ("durable lag"), and the time the capturing agent saw it minus the same
   ("seen lag").
2. Point-in-time restore vs plain restore, alternating: ``etcdguardctl restore --to-revision LAST --yes``
   (build: the base restored into a scratch etcd, every captured revision replayed, snapshotted, verified,
   stored, then the ordinary restore) and ``etcdguardctl restore BASE --yes``. The capture is turned off
   for this part (a reload), so the full snapshot each restored cluster would get does not run under the
   next timing. The build's replay speed (events/s) is from its own figures.

    python tests/bench/bench_continuous.py                 # 300 MB, 1,000 writes/s for 300 s
    python tests/bench/bench_continuous.py --quick         # 50 MB, 30 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.bench.common import save, spread  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 50           # writes between two durability samples


def percentile(values: list[float], p: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 3)


def dist(values: list[float]) -> dict[str, Optional[float]]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": percentile(values, 100),
            "n": len(values)}


# -- the load, in a process of its own ----------------------------------------------------------------------

def load(endpoints: list[str], rate: float, seconds: float, value_size: int, out: Path, procs: int = 4) -> None:
    """``rate`` puts a second for ``seconds``, from ``procs`` processes (one client and one paced loop each: a
    single Python process tops out below 1,000 a second on this machine); every SAMPLE_EVERY-th write's
    revision and the time it returned go to ``out``."""
    import multiprocessing

    started = time.time() + 1.0
    parts = [out.with_suffix(f".{n}.json") for n in range(procs)]
    workers = [multiprocessing.Process(target=_load_part, args=(endpoints[n % len(endpoints)], rate / procs, seconds,
                                                                value_size, started, n, parts[n]))
               for n in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results = [json.loads(p.read_text()) for p in parts]
    elapsed = max(r["ended"] for r in results) - started
    out.write_text(json.dumps({"writes": sum(r["writes"] for r in results), "seconds": elapsed,
                               "samples": sorted(x for r in results for x in r["samples"])}))


def _load_part(endpoint: str, rate: float, seconds: float, value_size: int, started: float, n: int,
               out: Path) -> None:
    from etcdguard.common.etcd.client import EtcdClient
    from etcdguard.common.etcd.writes import EtcdWriter, Op

    pool = random.Random(n).randbytes(1 << 20)
    writer = EtcdWriter(EtcdClient(endpoint, timeout=10.0))
    samples: list[tuple[int, float]] = []
    i = 0
    while time.time() - started < seconds:      # the rate asked for, or what the cluster takes: not longer
        due = started + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        key = f"/registry/pods/ns{i % 40}/pod-{n}-{i % 2000}".encode()
        offset = (i * 7919 + n * 104729) % (len(pool) - value_size)
        revision = writer.txn([Op("put", key, pool[offset:offset + value_size])])
        if i % SAMPLE_EVERY == 0:
            samples.append((revision, time.time()))
        i += 1
    out.write_text(json.dumps({"writes": i, "ended": time.time(), "samples": samples}))


# -- measuring ---------------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> Optional[float]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int, field: str = "VmRSS") -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


class Sampler:
    """Every second, in a thread: the coordinator's lag metric and each process's CPU time and RSS."""

    def __init__(self, rig: Any, procs: dict[str, int]) -> None:
        self.rig = rig
        self.procs = procs
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            row: dict[str, Any] = {"t": time.time()}
            try:
                row["lag"] = self.rig.metrics().get("etcdguard_continuous_lag_seconds")
            except Exception as exc:   # noqa: BLE001 - a missed scrape is a missed sample
                row["error"] = str(exc)
            for name, pid in self.procs.items():
                row[f"cpu_{name}"] = cpu_seconds(pid)
                row[f"rss_{name}"] = rss_mib(pid)
            self.samples.append(row)


def segment_times(vault_dir: Path) -> list[tuple[int, int, float]]:
    """(first, last, mtime) of every segment file the directory vault holds."""
    out = []
    for path in (vault_dir / "segments").rglob("seg-*.jsonl"):
        m = re.match(r"seg-(\d{20})-(\d{20})-", path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), path.stat().st_mtime))
    return sorted(out)


def seen_times(vault_dir: Path, revisions: set[int]) -> dict[int, float]:
    """When the capturing agent saw each of ``revisions`` (from the segments' events)."""
    from etcdguard.common.capture.segment import decode

    out: dict[int, float] = {}
    for path in (vault_dir / "segments").rglob("seg-*.jsonl"):
        for e in decode(path.read_bytes()).events:
            if e.revision in revisions:
                out[e.revision] = e.time_ms / 1000
    return out


def cpu_share(samples: list[dict[str, Any]], name: str) -> Optional[float]:
    pts = [(s["t"], s[f"cpu_{name}"]) for s in samples if s.get(f"cpu_{name}") is not None]
    if len(pts) < 2:
        return None
    return round(100 * (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), 1)


# -- the runs ------------------------------------------------------------------------------------------------

def restore_timed(rig: Any, *args: str) -> tuple[float, dict[str, Any]]:
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    r = rig.ctl("restore", *args, "--yes", "--force", "--json", timeout=3600)
    took = time.perf_counter() - started
    if r.returncode != 0:
        rig.dump_logs()
        raise SystemExit(f"etcdguardctl restore {' '.join(args)} failed ({r.returncode}): {r.stderr[-3000:]}")
    summary = json.loads(r.stdout)
    rig.ctl("restore", "--cleanup", summary["op"], "--yes", "--json", timeout=600)
    return took, summary


def drop_derived(rig: Any, keep: str) -> None:
    """Remove from the vault every snapshot but the base (pre-restore and point-in-time ones the runs
    added): each run builds and restores afresh, as the first one did."""
    vault = rig.tmp / "vault"
    for path in vault.glob("*"):
        if path.is_file() and not path.name.startswith(keep):
            path.unlink()
    rig.ctl("snapshots", "--json")


def set_continuous(rig: Any, enabled: bool) -> None:
    config = rig.coordinator.config
    text = config.read_text()
    head, sep, rest = text.partition("[continuous]\n")
    rest = re.sub(r"(?m)^enabled = (true|false)$", f"enabled = {'true' if enabled else 'false'}", rest, count=1)
    text = head + sep + rest
    config.write_text(text)
    os.killpg(rig.coordinator.proc.pid, 1)    # SIGHUP: reload


def wait_caught_up(rig: Any, revision: int, key: str = "received_revision", timeout: float = 120) -> dict[str, Any]:
    """The capture's status once it is running and ``key`` reached ``revision`` (bounded; polled)."""
    deadline = time.time() + timeout
    while True:
        status: dict[str, Any] = rig.ctl_json("status")["continuous"]
        if (status["running"] and (status[key] or 0) >= revision) or time.time() > deadline:
            return status
        time.sleep(0.5)


def measure_load(rig: Any, cluster: Any, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """Part 1: the load, and what the capture did with it."""
    status = wait_caught_up(rig, int(base["revision"]))
    capturing = status["member"]
    procs = {a.member.name: a.pid for a in rig.agents if a.pid}
    rss_before = {name: rss_mib(pid) for name, pid in procs.items()}
    procs["coordinator"] = rig.coordinator.proc.pid
    sampler = Sampler(rig, procs).start()
    out = rig.tmp / "load.json"
    started = time.time()
    subprocess.run([sys.executable, __file__, "--rate", str(args.rate), "--seconds", str(args.seconds),
                    "--value-size", str(args.value_size), "--load", cluster.endpoints, str(out)], check=True, cwd=REPO)
    run = json.loads(out.read_text())
    wait_caught_up(rig, max(r for r, _ in run["samples"]), key="written_revision")
    samples = sampler.stop()
    during = [s for s in samples if started + 2 <= s["t"] <= started + run["seconds"]]
    status = rig.ctl_json("status")["continuous"]
    segs = segment_times(rig.tmp / "vault")
    seen_at = seen_times(rig.tmp / "vault", {r for r, _ in run["samples"]})
    durable, seen = [], []
    for revision, done in run["samples"]:
        written = next((m for first, last, m in segs if first <= revision <= last), None)
        if written is not None:
            durable.append(written - done)
        if revision in seen_at:
            seen.append(seen_at[revision] - done)
    return {
        "writes": run["writes"], "seconds": round(run["seconds"], 1),
        "writes_per_second": round(run["writes"] / run["seconds"], 1), "capturing_member": capturing,
        "lag_metric_seconds": dist([s["lag"] for s in during if s.get("lag") is not None]),
        "durable_lag_seconds": dist(durable), "seen_lag_seconds": dist(seen),
        "segments": len(segs), "segment_bytes": status["segment_bytes"],
        "written_revision": int(status["written_revision"]),
        "cpu_percent": {name: cpu_share(during, name) for name in procs},
        "rss_mib_max": {name: max((s[f"rss_{name}"] or 0) for s in during) if during else None for name in procs},
        "capturing_agent_peak_rss_mib": rss_mib(procs[capturing], "VmHWM"),
        "rss_mib_before_load": rss_before,
    }


def measure_restores(rig: Any, base: dict[str, Any], last_revision: int, runs: int) -> dict[str, Any]:
    """Part 2: point-in-time restores of the last revision against plain restores of the base, alternating."""
    set_continuous(rig, False)
    deadline = time.time() + 30
    while rig.ctl_json("status")["continuous"]["enabled"] and time.time() < deadline:
        time.sleep(0.2)   # the reload taken (bounded)
    pit, plain, builds = [], [], []
    for i in range(runs):
        took, summary = restore_timed(rig, "--to-revision", str(last_revision))
        figures = summary["point_in_time"].get("build") or {}
        pit.append(took)
        builds.append(figures)
        drop_derived(rig, base["sha256"])
        took_plain, _ = restore_timed(rig, base["sha256"])
        plain.append(took_plain)
        drop_derived(rig, base["sha256"])
        print(f"  round {i + 1}: point-in-time {took:.1f}s (build {figures.get('seconds')}s, "
              f"{figures.get('events')} events at {figures.get('events_per_second')}/s); plain {took_plain:.1f}s",
              flush=True)
    out: dict[str, Any] = {
        "events_replayed": builds[0].get("events") if builds else None,
        "revisions_replayed": last_revision - int(base["revision"]),
        "point_in_time_seconds": spread(pit), "plain_seconds": spread(plain),
        "build_seconds": spread([b["seconds"] for b in builds if b]),
        "replay_events_per_second": spread([b["events_per_second"] for b in builds if b]), "builds": builds,
    }
    p, q = out["point_in_time_seconds"]["median"], out["plain_seconds"]["median"]
    out["ratio"] = round(p / q, 2) if p and q else None
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--value-size", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=2, help="point-in-time / plain restore rounds")
    ap.add_argument("--quick", action="store_true", help="50 MB, 30 s of load, one restore round")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--load", nargs=2, metavar=("ENDPOINTS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load:
        load(args.load[0].split(","), args.rate, args.seconds, args.value_size, Path(args.load[1]))
        return 0
    if args.quick:
        args.size_mb, args.seconds, args.runs = 50, 30.0, 1

    from tests.bench.workload import MB, fill_cluster
    from tests.helpers.etcd import EtcdCluster, build_for
    from tests.helpers.restore_rig import RestoreRig

    build = build_for("3.5")
    if build is None:
        raise SystemExit("etcd 3.5 not installed (bash scripts/install-etcd.sh)")
    base_dir = Path(tempfile.mkdtemp(prefix="etcdguard-bench-continuous-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    result: dict[str, Any] = {"size_mb": args.size_mb, "rate": args.rate, "seconds": args.seconds,
                              "value_size": args.value_size, "quick": args.quick, "etcd": build.version}
    try:
        cluster = EtcdCluster(build, base_dir / "etcd", size=3)
        cluster.launch()
        # filled before the coordinator starts: its capture then starts at the filled revision, so the load's
        # figures are the capture of the load alone (not of 300 MB of 1 MB transactions read first)
        loaded = fill_cluster(cluster, args.size_mb * MB, seed=0)
        rig = RestoreRig(cluster, base_dir / "rig", seed_agents=False,
                         restore={"bump_revision": 1_000_000, "fence_settle": "0.5s", "start_timeout": "120s"},
                         coordinator_sections={"continuous": {"enabled": True, "flush": "5s"},
                                               "scratch": {"etcd": str(build.etcd), "tool": str(build.restore_tool)}})
        try:
            rig.start()
            base = rig.backup()
            print(f"filled {args.size_mb} MB in {loaded.seconds:.1f}s; base {base['sha256'][:12]} revision "
                  f"{base['revision']}, {base['size'] / MB:.0f} MB", flush=True)
            result["load"] = measure_load(rig, cluster, args, base)
            print(json.dumps(result["load"], indent=1), flush=True)
            result["restore"] = measure_restores(rig, base, result["load"]["written_revision"], args.runs)
            print(json.dumps(result["restore"], indent=1), flush=True)
        except BaseException:
            rig.dump_logs()
            raise
        finally:
            rig.stop()
            cluster.stop_all()
    finally:
        if args.keep:
            print(f"kept {base_dir}")
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
    print(f"wrote {save('continuous' + ('-quick' if args.quick else ''), result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
