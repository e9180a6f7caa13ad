"""The manual HA restore runbook (design section 1) as a script: the baseline of the cluster-restore bench.

Done the way a careful operator would script it, and as fast as that can be:

1. stop etcd on every member at once with SIGKILL (faster than SIGTERM, whose leader spends
   seconds handing over leadership; the old data is set aside anyway) and wait until each is gone;
2. on every member in parallel, `etcdutl snapshot restore` (etcd 3.4: `etcdctl snapshot restore`)
   of the same snapshot into a new data dir with that member's --name and
   --initial-advertise-peer-urls, the full --initial-cluster and one fresh --initial-cluster-token;
   on etcd >= 3.5.10 also --bump-revision (above the live revision, read before the stop) and
   --mark-compacted;
3. swap the dirs by rename (the old data kept aside, as etcdguard keeps it);
4. start every member and wait until every member is healthy and all agree on one leader.

The whole script is downtime. Ownership is not fixed up: the benchmark runs everything as one
user, so the restored files already have the owner and mode of the old ones.

    python tests/bench/manual_runbook.py --members 3 --size-mb 50 [--build 3.5]   (a demo on fresh data)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.etcd import EtcdCluster, build_for, clean_env  # noqa: E402

BUMP = 1_000_000


@dataclass(frozen=True)
class ManualResult:
    total_seconds: float        # = downtime: every member is down from the first step to the last
    downtime_seconds: float
    stop_seconds: float
    restore_seconds: float
    swap_seconds: float
    start_seconds: float        # start every member .. every member healthy under one leader
    bump_revision: int
    token: str

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def live_revision(cluster: EtcdCluster) -> int:
    """The cluster's revision now (the operator reads it before stopping anything, to bump above it)."""
    statuses = cluster.statuses()
    return max(int(s["header"]["revision"]) for s in statuses.values()) if statuses else 0


def restore_argv(cluster: EtcdCluster, member: Any, snapshot: Path, target: Path, token: str, bump: int) -> list[str]:
    build = cluster.build
    argv = [str(build.restore_tool), "snapshot", "restore", str(snapshot), f"--data-dir={target}",
            f"--name={member.name}", f"--initial-cluster={member.initial_cluster}",
            f"--initial-cluster-token={token}", f"--initial-advertise-peer-urls={member.peer_url}"]
    if bump:
        argv += [f"--bump-revision={bump}", "--mark-compacted"]
    return argv


def run_manual(cluster: EtcdCluster, snapshot: Path, snapshot_revision: int = 0, *,
               healthy_timeout: float = 120.0) -> ManualResult:
    """Restore every member of ``cluster`` from ``snapshot`` by the manual runbook; its timings.

    The old data dirs are left beside the new ones (``<member dir>/manual-old-<token>``);
    ``discard_old`` removes them (the benchmark does, outside the timed part).
    """
    token = f"manual-{secrets.token_hex(4)}"
    bump = 0
    if cluster.build.supports_bump_revision:
        live = live_revision(cluster)
        bump = max(BUMP, live - snapshot_revision + BUMP) if snapshot_revision else BUMP + live
    env = clean_env({"ETCDCTL_API": "3"})
    targets = {m.name: m.dir / f"manual-new-{token}" for m in cluster.members}

    started = time.perf_counter()
    cluster.stop_all(kill=True)                                   # 1. SIGKILL all, wait until gone
    stopped = time.perf_counter()
    procs = [subprocess.Popen(restore_argv(cluster, m, snapshot, targets[m.name], token, bump), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for m in cluster.members]
    errors = [(m.name, p.returncode, err) for m, p in zip(cluster.members, procs)
              for _, err in [p.communicate()] if p.returncode != 0]
    if errors:
        raise RuntimeError(f"snapshot restore failed: {errors}")
    restored = time.perf_counter()
    for m in cluster.members:                                     # 3. swap
        os.rename(m.data_dir, m.dir / f"manual-old-{token}")
        os.rename(targets[m.name], m.data_dir)
        m.cluster_token = token
    swapped = time.perf_counter()
    cluster.start()                                               # 4. start all (data present: in parallel)
    cluster.wait_healthy(healthy_timeout)                         #    every member healthy, one leader
    done = time.perf_counter()
    return ManualResult(total_seconds=done - started, downtime_seconds=done - started,
                        stop_seconds=stopped - started, restore_seconds=restored - stopped,
                        swap_seconds=swapped - restored, start_seconds=done - swapped,
                        bump_revision=bump, token=token)


def discard_old(cluster: EtcdCluster, result: ManualResult) -> None:
    def remove(m: Any) -> None:
        shutil.rmtree(m.dir / f"manual-old-{result.token}", ignore_errors=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cluster.members)) as ex:
        list(ex.map(remove, cluster.members))


def main(argv: Optional[list[str]] = None) -> int:
    from tests.bench.workload import fill_cluster

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--build", default="3.5")
    args = ap.parse_args(argv)
    build = build_for(args.build)
    if build is None:
        raise SystemExit(f"etcd {args.build} not installed (bash scripts/install-etcd.sh)")
    with tempfile.TemporaryDirectory(prefix="etcdguard-manual-", dir=os.environ.get("BENCH_DIR", "/var/tmp")) as t:
        cluster = EtcdCluster(build, Path(t), size=args.members)
        cluster.launch()
        try:
            fill_cluster(cluster, args.size_mb * 1_000_000)
            snap = Path(t) / "snap.db"
            cluster.members[0].etcdctl("snapshot", "save", str(snap), timeout=600)
            result = run_manual(cluster, snap)
            print(result.to_json())
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
