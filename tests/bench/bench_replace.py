"""Member replacement: `etcdguardctl replace` against the manual etcdctl procedure, same data, same run.

Three real etcd members on loopback, an agent per member (process runtime, CURVE) and a coordinator
(tests/helpers/restore_rig.py), filled with the seeded workload (tests/bench/workload.py). Then,
alternating A/B (etcdguard, manual, ...): m3's etcd is SIGKILLed and its data dir deleted, and the
member is replaced from the other two: by `etcdguardctl replace m3 --yes --json` and by
tests/bench/manual_replace.py (member remove, member add --learner, start with `existing`, wait
caught up, member promote, wait healthy).

etcdguard: time to healthy = the summary's ``time_to_healthy_seconds`` (the operation's start to the
end of promote: removed, re-added, started, caught up and promoted); total = the command's wall clock
(its plan and survey first, then settle and confirm: the same hashkv on every member). Manual: the
script from its first etcdctl call to the promoted member's health.

    python tests/bench/bench_replace.py --build 3.5 --size-mb 300 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.bench.common import save, spread  # noqa: E402
from tests.bench.manual_replace import replace_manually  # noqa: E402
from tests.bench.workload import MB, fill_cluster  # noqa: E402
from tests.helpers.etcd import EtcdCluster, EtcdMember, build_for  # noqa: E402
from tests.helpers.net import wait_until  # noqa: E402
from tests.helpers.restore_rig import RestoreRig  # noqa: E402

STEPS = ("health-check", "retire", "set-aside", "remove", "add-learner", "join", "catch-up", "promote", "settle",
         "confirm")


def lose(member: EtcdMember) -> None:
    """Its VM or disk is gone: etcd SIGKILLed, the data dir deleted. Returns once its ports are free again (a
    SIGKILLed etcd's main thread is reaped before its other threads have closed its listening sockets)."""
    member.stop(kill=True)
    shutil.rmtree(member.data_dir, ignore_errors=True)
    wait_until(lambda: all(listenable(port, member.host) for port in (member.peer_port, member.client_port)), 30,
               interval=0.02, what=f"{member.name}'s ports to be free")


def listenable(port: int, host: str) -> bool:
    """Could a server listen on ``port`` now, as etcd does (SO_REUSEADDR: connections in TIME_WAIT do not count)?"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            return False
    return True


def etcdguard_run(rig: RestoreRig, member: EtcdMember) -> dict[str, Any]:
    lose(member)
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    r = rig.ctl("replace", member.name, "--yes", "--json", timeout=1800)
    total = time.perf_counter() - started
    if r.returncode != 0:
        rig.dump_logs()
        raise SystemExit(f"etcdguardctl replace failed ({r.returncode}): {r.stderr[-3000:]}\n{r.stdout}")
    summary = json.loads(r.stdout)
    phases = {p["phase"]: float(p["seconds"]) for p in summary.get("phases") or []}
    return {"total": total, "time_to_healthy": float(summary["time_to_healthy_seconds"]), "phases": phases,
            "op": summary["op"]}


def manual_run(cluster: EtcdCluster, member: EtcdMember) -> dict[str, Any]:
    lose(member)
    subprocess.run(["sync"], check=True)
    result = replace_manually(cluster, member)
    return result.to_json()


def bench(cluster: EtcdCluster, rig: RestoreRig, size_mb: int, runs: int) -> dict[str, Any]:
    loaded = fill_cluster(cluster, size_mb * MB)
    db = max(int(s["dbSize"]) for s in cluster.statuses().values())
    print(f"  3 members, etcd {cluster.build.version}: {size_mb} MB of values loaded in {loaded.seconds:.1f}s, "
          f"db {db / MB:.0f} MB", flush=True)
    member = cluster.members[2]
    eg: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    for i in range(runs):
        eg.append(etcdguard_run(rig, member))
        cluster.wait_healthy(60)
        manual.append(manual_run(cluster, member))
        cluster.wait_healthy(60)
        print(f"    run {i + 1}: etcdguard healthy {eg[-1]['time_to_healthy']:.2f}s, total {eg[-1]['total']:.2f}s "
              f"({', '.join(f'{k} {v:.2f}' for k, v in eg[-1]['phases'].items())}); manual "
              f"{manual[-1]['total_seconds']:.2f}s (remove {manual[-1]['remove_seconds']:.2f}, add+start "
              f"{manual[-1]['add_seconds']:.2f}, catch up {manual[-1]['catch_up_seconds']:.2f}, promote "
              f"{manual[-1]['promote_seconds']:.2f})", flush=True)
    healthy = spread([r["time_to_healthy"] for r in eg])
    total = spread([r["total"] for r in eg])
    m_total = spread([r["total_seconds"] for r in manual])
    assert healthy["median"] and total["median"] and m_total["median"]
    return {"etcd": cluster.build.version, "members": 3, "size_mb": size_mb, "db_bytes": db, "runs": runs,
            "etcdguard_time_to_healthy": healthy, "etcdguard_total": total, "manual_total": m_total,
            "healthy_ratio": round(healthy["median"] / m_total["median"], 3),
            "total_ratio": round(total["median"] / m_total["median"], 3),
            "etcdguard_phases": {p: spread([r["phases"][p] for r in eg if p in r["phases"]]) for p in STEPS},
            "manual_steps": {k: spread([r[f"{k}_seconds"] for r in manual])
                             for k in ("remove", "add", "catch_up", "promote")},
            "raw": {"etcdguard": eg, "manual": manual}}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="leave the work directory (logs, journals) behind")
    args = ap.parse_args(argv)
    build = build_for(args.build)
    if build is None:
        raise SystemExit(f"etcd {args.build} not installed (bash scripts/install-etcd.sh)")
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-replace-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    try:
        cluster = EtcdCluster(build, base / "etcd", size=3)
        cluster.launch()
        rig = RestoreRig(cluster, base / "rig", seed_agents=False)
        try:
            rig.start()
            row = bench(cluster, rig, args.size_mb, args.runs)
        except BaseException:
            rig.dump_logs()
            raise
        finally:
            rig.stop()
            cluster.stop_all()   # also the etcd the manual script started last (it serves m3's data dir)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({k: v for k, v in row.items() if k != "raw"}))
    print(f"wrote {save(f'replace-{args.build}', {'rows': [row]})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
