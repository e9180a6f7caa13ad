"""Cluster restore: `etcdguardctl restore` against the manual HA runbook, same data, same run.

One cluster of ``--members`` real etcd members on loopback, an agent per member (process
runtime, CURVE) and a coordinator with a directory vault (tests/helpers/restore_rig.py). The
cluster is filled with the seeded workload (tests/bench/workload.py), one vault snapshot is
taken, and then, alternating A/B (etcdguard, manual, etcdguard, ...), the cluster is restored
from that same snapshot file: by `etcdguardctl restore SHA --yes --json` (the vault id the
`backup` returned: the same data `latest` named then; later runs add pre-restore snapshots to
the vault, which would become `latest`) and by tests/bench/manual_runbook.py. Every run starts
from the snapshot's data, so each restores the same state.

etcdguard: total = wall clock of the command; downtime = the summary's ``downtime_seconds``
(fence .. unfence, from the journal); each phase's duration from the summary.
Manual: total = downtime = the whole script (SIGKILL all .. every member healthy, one leader).
The kept data of each run is deleted afterwards, outside the timed part.

``--scenario dead``: before every run (etcdguard's and the manual one's) the cluster is made dead the
way the issue measured it: quorum lost, two of three members SIGKILLed and their data deleted (their
disks gone), one survivor without a leader. The manual script restores from the snapshot file already
on every node; etcdguard from the snapshot its agents hold pre-staged (the bench waits until they do,
before the first run). Every second is downtime in both, so the ratio compares the totals.

``--warm``: the coordinator runs with ``[restore] warm_standby``; before each of etcdguard's runs the
bench waits (untimed) until every member holds the snapshot restored ahead, so prepare is a rename.

    python tests/bench/bench_cluster_restore.py --build 3.5 --members 3 --sizes-mb 300,1000 --runs 5
    python tests/bench/bench_cluster_restore.py --build 3.5 --scenario dead --sizes-mb 300,1000
    python tests/bench/bench_cluster_restore.py --build 3.5 --scenario dead --warm --sizes-mb 300,1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from etcdguard.common.snapshot.compression import decompressing  # noqa: E402
from etcdguard.coordinator.config import RestoreSettings  # noqa: E402

from tests.bench.common import save, spread  # noqa: E402
from tests.bench.manual_runbook import discard_old, run_manual  # noqa: E402
from tests.bench.workload import MB, fill_cluster  # noqa: E402
from tests.helpers.agentconf import adopt  # noqa: E402
from tests.helpers.etcd import EtcdCluster, build_for  # noqa: E402
from tests.helpers.restore_rig import RestoreRig  # noqa: E402

# An A/B round (etcdguard + manual) longer than this: 3 rounds instead of --runs. 45 s rather than a
# minute: at 1 GB a round on etcd 3.5 takes ~53 s, and 5 of them would take make bench past 25 minutes.
LONG_RUN = 45.0
# the product's defaults (the rig's own are shorter), but a bump of 1,000,000
RESTORE_CONFIG = {"bump_revision": 1_000_000, "fence_settle": f"{RestoreSettings.fence_settle}s",
                  "start_timeout": f"{RestoreSettings.start_timeout}s", "agent_down": f"{RestoreSettings.agent_down}s"}
PHASES = ("preflight", "stage", "prepare", "fence", "stop", "swap", "start", "verify", "unfence",
          "restart-controllers")


def kill_quorum(cluster: EtcdCluster) -> None:
    """The dead-cluster scenario: every member but the first SIGKILLed and its data deleted."""
    for m in cluster.members[1:]:
        m.stop(kill=True)
        shutil.rmtree(m.data_dir / "member", ignore_errors=True)


def wait_prestaged(rig: RestoreRig, sha: str, timeout: float = 600.0, warm: bool = False) -> float:
    """Until every member holds the snapshot pre-staged (or in its store), and with ``warm`` restored
    ahead too; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        p = rig.ctl_json("status")["vault"].get("prestage") or {}
        members = p.get("members") or {}
        if p.get("newest") == sha and len(members) == len(rig.agents) and all(
                s.get("holds_newest") and (s.get("warm") or not warm) for s in members.values()):
            return time.monotonic() - started
        time.sleep(0.5)   # polling the coordinator's status with a deadline (outside every timed part)
    raise SystemExit(f"snapshot {sha[:12]} was not {'restored ahead' if warm else 'pre-staged'} on every member "
                     f"within {timeout:.0f}s")


def etcdguard_run(rig: RestoreRig, snapshot_id: str) -> dict[str, Any]:
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    # --force: after the first run the cluster id is the restored one, no longer the snapshot's
    r = rig.ctl("restore", snapshot_id, "--yes", "--force", "--json", timeout=1800)
    total = time.perf_counter() - started
    if r.returncode != 0:
        rig.dump_logs()
        raise SystemExit(f"etcdguardctl restore failed ({r.returncode}): {r.stderr[-3000:]}\n{r.stdout}")
    summary = json.loads(r.stdout)
    if summary.get("state") != "done":
        raise SystemExit(f"restore ended {summary.get('state')}: {summary}")
    phases = {p["phase"]: float(p["seconds"]) for p in summary.get("phases") or []}
    # outside the timed part: the kept old data, and the pre-restore snapshot the vault pinned
    rig.ctl("restore", "--cleanup", summary["op"], "--yes", "--json", timeout=600)
    records = rig.journal(summary["op"])
    staged = [r.get("result") or {} for r in records
              if r.get("event") == "step" and r.get("phase") == "stage" and r.get("status") == "done"]
    prepared = [r.get("result") or {} for r in records
                if r.get("event") == "step" and r.get("phase") == "prepare" and r.get("status") == "done"]
    return {"total": total, "downtime": float(summary["downtime_seconds"] or total), "phases": phases,
            "summary_total": summary.get("total_seconds"), "op": summary["op"],
            "pre_restore": summary.get("pre_restore_snapshot"), "down_before": summary.get("down_before"),
            "time_to_healthy": summary.get("time_to_healthy_seconds"),
            "sent_at_restore": sum(1 for s in staged if not s.get("from_store")),
            "prepared_ahead": sum(1 for p in prepared if p.get("warm"))}


def manual_run(rig: RestoreRig, snapshot: Path, revision: int) -> dict[str, Any]:
    subprocess.run(["sync"], check=True)
    result = run_manual(rig.cluster, snapshot, revision)
    for agent in rig.agents:   # the harness started these etcds: the agents adopt them
        adopt(agent.member, agent.workdir / "etcd.pid")
        # The script swaps whole data dirs, so etcdguard's warm standby area (inside the data dir) went
        # with the old one: put it back (untimed), as if no manual restore had happened in between.
        warm = agent.member.dir / f"manual-old-{result.token}" / ".etcdguard-warm"
        if warm.is_dir():
            os.rename(warm, agent.member.data_dir / ".etcdguard-warm")
    discard_old(rig.cluster, result)
    return result.to_json()


def drop_pre_restore(rig: RestoreRig, vault_dir: Path, keep: str) -> None:
    """Disk: remove the pre-restore snapshots the runs added (vault and agents' stores), not the bench's."""
    for path in vault_dir.glob("*"):
        if not path.name.startswith(keep) and path.is_file():
            path.unlink()
    for agent in rig.agents:
        for meta in agent.store_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                if json.loads(meta.read_text()).get("sha256") != keep:
                    Path(str(meta)[:-5]).unlink(missing_ok=True)
                    meta.unlink()


def raw_snapshot(vault_dir: Path, sha: str, work: Path) -> Path:
    """The snapshot file the manual runbook restores: the vault's own, or its zstd object decompressed."""
    stored = sorted(vault_dir.glob(f"{sha}*"))
    plain = [p for p in stored if p.suffix == ".db"]
    if plain:
        return plain[0]
    compressed = next(p for p in stored if p.name.endswith(".db.zst"))
    out = work / f"{sha}.db"
    with compressed.open("rb") as raw, out.open("wb") as dst:
        shutil.copyfileobj(decompressing(raw), dst, 1 << 20)
    return out


def bench_size(rig: RestoreRig, size_mb: int, runs: int, seed: int, present: int,
               scenario: str = "live", warm: bool = False) -> dict[str, Any]:
    """Top the cluster up from ``present`` bytes of values to ``size_mb`` (seeded), then the A/B runs."""
    cluster = rig.cluster
    loaded = fill_cluster(cluster, size_mb * MB - present, seed=seed)
    entry = rig.backup()
    sha = entry["sha256"]
    vault_dir = rig.tmp / "vault"
    snapshot = raw_snapshot(vault_dir, sha, rig.tmp)
    print(f"  {len(cluster.members)} members, etcd {cluster.build.version}: {size_mb} MB of values "
          f"({(present + loaded.value_bytes) / MB:.0f} MB in all) loaded in {loaded.seconds:.1f}s, vault snapshot "
          f"{entry['size'] / MB:.0f} MB rev {entry['revision']}", flush=True)
    prestaged = wait_prestaged(rig, sha)
    print(f"    pre-staged on every member {prestaged:.1f}s after the backup", flush=True)
    eg: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    planned = runs
    i = 0
    while i < planned:
        if warm:
            wait_prestaged(rig, sha, warm=True)
        if scenario == "dead":
            kill_quorum(cluster)
        eg.append(etcdguard_run(rig, sha))
        if scenario == "dead":
            kill_quorum(cluster)
        manual.append(manual_run(rig, snapshot, int(entry["revision"])))
        print(f"    run {i + 1}: etcdguard total {eg[-1]['total']:.2f}s downtime {eg[-1]['downtime']:.2f}s "
              f"({', '.join(f'{k} {v:.2f}' for k, v in eg[-1]['phases'].items())}); manual "
              f"{manual[-1]['total_seconds']:.2f}s (stop {manual[-1]['stop_seconds']:.2f}, restore "
              f"{manual[-1]['restore_seconds']:.2f}, start {manual[-1]['start_seconds']:.2f})", flush=True)
        drop_pre_restore(rig, vault_dir, sha)
        if i == 0 and eg[0]["total"] + manual[0]["total_seconds"] > LONG_RUN:
            planned = min(planned, 3)   # a long A/B round: 3 rounds (make bench stays within 25 min)
        i += 1
    eg_total = spread([r["total"] for r in eg])
    eg_down = spread([r["downtime"] for r in eg])
    m_total = spread([r["total_seconds"] for r in manual])
    row: dict[str, Any] = {
        "scenario": scenario, "warm_standby": warm, "prestaged_seconds": round(prestaged, 2),
        "prepared_ahead": min(r["prepared_ahead"] for r in eg),
        "sent_at_restore": max(r["sent_at_restore"] for r in eg),
        "etcd": cluster.build.version, "members": len(cluster.members), "size_mb": size_mb,
        "snapshot_bytes": int(entry["size"]), "value_bytes": present + loaded.value_bytes, "runs": len(eg),
        "etcdguard_total": eg_total, "etcdguard_downtime": eg_down, "manual_total": m_total,
        "manual_downtime": m_total,
        "etcdguard_phases": {p: spread([r["phases"][p] for r in eg if p in r["phases"]]) for p in PHASES},
        "manual_steps": {k: spread([r[f"{k}_seconds"] for r in manual]) for k in ("stop", "restore", "swap",
                                                                                   "start")},
        "raw": {"etcdguard": eg, "manual": manual},
    }
    assert eg_total["median"] and m_total["median"] and eg_down["median"] is not None
    row["total_ratio"] = round(eg_total["median"] / m_total["median"], 3)
    row["downtime_ratio"] = round(eg_down["median"] / m_total["median"], 3)
    return row


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="3.5")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--sizes-mb", default="300", help="comma-separated; one cluster grows through them")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the work directory (logs, journals) behind")
    ap.add_argument("--name", help="results/<name>.json (default cluster-restore-<build>-<members>)")
    ap.add_argument("--scenario", choices=("live", "dead"), default="live",
                    help="live: a serving cluster; dead: quorum lost before each run (two members killed, data gone)")
    ap.add_argument("--warm", action="store_true", help="[restore] warm_standby on: prepare adopts the copy "
                    "restored ahead")
    args = ap.parse_args(argv)
    build = build_for(args.build)
    if build is None:
        raise SystemExit(f"etcd {args.build} not installed (bash scripts/install-etcd.sh)")
    rows = []
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-cluster-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    try:
        cluster = EtcdCluster(build, base / "etcd", size=args.members)
        cluster.launch()
        rig = RestoreRig(cluster, base / "rig", restore={**RESTORE_CONFIG, "warm_standby": args.warm},
                         seed_agents=False)
        try:
            rig.start()
            present = 0
            for n, size in enumerate(int(s) for s in args.sizes_mb.split(",")):
                rows.append(bench_size(rig, size, args.runs, seed=n, present=present, scenario=args.scenario,
                                       warm=args.warm))
                present = rows[-1]["value_bytes"]
        except BaseException:
            rig.dump_logs()
            raise
        finally:
            rig.stop()
            cluster.stop_all()
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    name = args.name or (f"cluster-restore-{args.build}-{args.members}"
                         + ("-dead" if args.scenario == "dead" else "") + ("-warm" if args.warm else ""))
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k != "raw"}))
    print(f"wrote {save(name, {'rows': rows, 'restore_config': RESTORE_CONFIG})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
