"""`make bench`: every benchmark in one run, results as JSON (tests/bench/results/) and as
the tables in docs/benchmarks.md. Ratios compare etcdguard with the plain etcdctl
procedure on the same data in the same run; nothing here is a pass/fail test.

    python tests/bench/run.py [--quick] [--render]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "tests" / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
FAILED: list[str] = []
NEEDS_FREE = 16 * 2**30   # a full run held up to 13.6 GiB more on disk than before it (df sampled every 5 s)
TIMES: list[tuple[str, float]] = []   # each benchmark script's wall time, in the order run


def run(script: str, *args: str) -> None:
    path = ROOT / "tests" / "bench" / script
    if not path.exists():
        print(f"skipping {script}: not present")
        return
    print(f"== {script} {' '.join(args)}", flush=True)
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(path), *args], check=False, cwd=ROOT)
    TIMES.append((f"{script} {' '.join(args)}", round(time.monotonic() - started, 1)))
    print(f"== {script}: {TIMES[-1][1]:.0f} s", flush=True)
    if r.returncode != 0:   # the other benchmarks still run; make bench fails at the end
        print(f"!! {script} {' '.join(args)} failed (exit {r.returncode})", flush=True)
        FAILED.append(f"{script} {' '.join(args)}")


def load(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    out = ["| " + " | ".join(title for _, title in columns) + " |",
           "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(out)


def rng(d: Optional[dict[str, Any]], digits: int = 2) -> str:
    """'median [min-max]' of a spread() value."""
    if not d or d.get("median") is None:
        return ""
    return f"{d['median']:.{digits}f} [{d['min']:.{digits}f}-{d['max']:.{digits}f}]"


def met(ok: Optional[bool]) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    mem = ""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")))
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} cores ({cpu or platform.machine()}){mem}"


def snapshot_section() -> list[str]:
    results = [load(name) for name in ("snapshot-3.4", "snapshot-3.5")]
    snaps = [r for res in results if res for r in res["rows"]]
    if not snaps:
        return []
    by_build: dict[str, list[float]] = {}
    for r in snaps:
        by_build.setdefault(r["etcd"], []).append(r["agent_peak_rss_mib"] or 0)
    for r in snaps:
        r["etcdctl"] = rng(r.get("manual_range"))
        r["etcdguard"] = rng(r.get("agent_range"))
        r["time_target"] = "<= 1.0" if r["size_mb"] <= 300 else "(none)"
        r["time_met"] = met(r["time_ratio_agent_to_manual"] <= 1.0) if r["size_mb"] <= 300 else ""
        rss = by_build[r["etcd"]]
        r["rss_met"] = met(r["agent_peak_rss_mib"] <= 100 and max(rss) <= 1.2 * min(rss))
    startups = [res["startup"] for res in results if res and res.get("startup")]
    out = [
        "## Snapshot: `etcdguard-agent snapshot` vs `etcdctl snapshot save` + `snapshot status`",
        "",
        "Both write the file, fsync it and read its revision; etcdguard also verifies the SHA-256",
        "trailer and records metadata. Runs alternate etcdctl, etcdguard, etcdctl, ... on one member",
        "that grows through the sizes (the seeded workload). Seconds are median [min-max]; the ratio is",
        "of the medians (< 1: etcdguard is faster). \"etcdguard s\" is the whole `etcdguard-agent snapshot`",
        "command (Python start-up included); \"in-process\" times the snapshot alone in a warm process,",
        "which is what the daemon's scheduled backups cost (median of the repeats; one run at 1 GB). Peak",
        "RSS is the command's VmHWM; its target",
        "is <= 100 MB and flat (within 1.2x) from 100 MB to 1 GB.",
        "",
        table(snaps, [("etcd", "etcd"), ("size_mb", "data MB"), ("snapshot_bytes", "snapshot bytes"),
                      ("etcdctl", "etcdctl s"), ("etcdguard", "etcdguard s"),
                      ("time_ratio_agent_to_manual", "time ratio"), ("time_target", "target"),
                      ("time_met", "met"), ("agent_in_process_seconds", "in-process s"),
                      ("in_process_ratio_to_manual", "in-process ratio"),
                      ("agent_peak_rss_mib", "peak RSS MiB"), ("rss_met", "RSS <= 100 MB, flat")]),
        "",
    ]
    if startups:
        st = startups[-1]
        out += [f"Fixed cost of the command on this machine (median of 5): the interpreter alone "
                f"{st['interpreter_seconds']:.3f} s, with the snapshot command's imports "
                f"{st['with_imports_seconds']:.3f} s (imports {st['imports_seconds']:.3f} s). See "
                "\"Where the time goes\" below.", ""]
    return out


def cluster_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(RESULTS.glob("cluster-restore-*.json")):
        rows += json.loads(path.read_text())["rows"]
    return rows


def live_target(r: dict[str, Any]) -> float:
    """The live-cluster downtime target: 0.35x the manual runbook at 300 MB, 0.25x from 1 GB."""
    return 0.25 if r["size_mb"] >= 1000 else 0.35


def dead_target(r: dict[str, Any]) -> float:
    """The dead-cluster total target: 1.0x the manual runbook, 0.5x with warm standby."""
    return 0.5 if r.get("warm_standby") else 1.0


def cluster_section() -> list[str]:
    every = cluster_rows()
    if not every:
        return []
    for r in every:
        r["snap_mb"] = round(r["snapshot_bytes"] / 1e6)
        r["eg_total"] = rng(r["etcdguard_total"])
        r["m_total"] = rng(r["manual_total"])
        r["eg_down"] = rng(r["etcdguard_downtime"])
        r["total_met"] = met(r["total_ratio"] <= (dead_target(r) if r.get("scenario") == "dead" else 1.5))
        r["down_met"] = met(r["downtime_ratio"] <= live_target(r))
        r["target"] = f"<= {dead_target(r) if r.get('scenario') == 'dead' else live_target(r)}x"
        r["warm"] = "yes" if r.get("warm_standby") else "no"
        for phase, d in r["etcdguard_phases"].items():
            r[f"ph_{phase}"] = f"{d['median']:.2f}" if d.get("median") is not None else ""
        for step, d in r["manual_steps"].items():
            r[f"ms_{step}"] = f"{d['median']:.2f}" if d.get("median") is not None else ""
    rows = [r for r in every if r.get("scenario", "live") == "live"]
    three = [r for r in rows if r["members"] == 3]
    out = [
        "## Cluster restore: `etcdguardctl restore` vs the manual HA runbook",
        "",
        "Real etcd members on loopback, an agent per member (process runtime, CURVE), a coordinator with a",
        "directory vault (tests/helpers/restore_rig.py), product defaults except `bump_revision = 1000000`",
        "(`fence_settle` is its default; no kube-apiserver stand-ins, so fence and unfence stop and",
        "start none, as the manual script stops none). One vault snapshot of the seeded workload; then, on",
        "that same file, runs alternate: `etcdguardctl restore <its id> --yes --force --json` (the id",
        "`latest` named when it was taken; `--force` because after the first run the cluster id is the",
        "restored one) and tests/bench/manual_runbook.py (SIGKILL all members in parallel, `etcdutl",
        "snapshot restore` (3.4: `etcdctl`) on all in parallel into new dirs with one fresh token, on 3.5",
        "with `--bump-revision` above the live revision and `--mark-compacted`, swap, start all, wait until",
        "every member is healthy under one leader). etcdguard total = wall clock of the command; its",
        "downtime = the summary's `downtime_seconds` (fence .. unfence, from the journal). The manual",
        "script is downtime from its first step to its last. Seconds are median [min-max] of the runs",
        "(5, or 3 where the first A/B round took over 45 s); ratios are of the medians. Everything shares",
        "2 cores: the three members' restores, the transfers and the encryption run side by side here,",
        "on separate hosts in production.",
        "",
        table(three, [("etcd", "etcd"), ("members", "members"), ("size_mb", "data MB"),
                      ("snap_mb", "snapshot MB"), ("runs", "runs"), ("eg_total", "etcdguard total s"),
                      ("m_total", "manual total s"), ("total_ratio", "total ratio"),
                      ("total_met", "<= 1.5x"), ("eg_down", "etcdguard downtime s"),
                      ("m_total", "manual downtime s"), ("downtime_ratio", "downtime ratio"),
                      ("target", "downtime target"), ("down_met", "met")]),
        "",
    ]
    out += dead_section([r for r in every if r.get("scenario") == "dead"])
    flat = []
    for build in sorted({r["etcd"] for r in three}):
        sizes = sorted((r for r in three if r["etcd"] == build), key=lambda r: r["size_mb"])
        if len(sizes) >= 2:
            lo, hi = sizes[0], sizes[-1]
            ratio = hi["etcdguard_downtime"]["median"] / lo["etcdguard_downtime"]["median"]
            flat.append({"etcd": build, "sizes": f"{lo['size_mb']} -> {hi['size_mb']} MB",
                         "down": f"{lo['etcdguard_downtime']['median']:.2f} -> "
                                 f"{hi['etcdguard_downtime']['median']:.2f}",
                         "ratio": round(ratio, 3), "met": met(ratio <= 1.2)})
    if flat:
        out += ["Downtime flat with the data size (target: the larger within 1.2x of the smaller):", "",
                table(flat, [("etcd", "etcd"), ("sizes", "data"), ("down", "etcdguard downtime s"),
                             ("ratio", "ratio"), ("met", "<= 1.2x")]), ""]
    scale = sorted((r for r in rows if r["size_mb"] == 300 and r["etcd"].startswith("3.5")),
                   key=lambda r: r["members"])
    base = next((r for r in scale if r["members"] == 3), None)
    if base is not None and len(scale) > 1:
        for r in scale:
            r["t_vs3"] = round(r["etcdguard_total"]["median"] / base["etcdguard_total"]["median"], 3)
            r["d_vs3"] = round(r["etcdguard_downtime"]["median"] / base["etcdguard_downtime"]["median"], 3)
            r["scale_met"] = met(r["t_vs3"] <= 1.2 and r["d_vs3"] <= 1.2) if r["members"] == 5 else ""
        out += ["Scaling with the member count (300 MB, etcd 3.5; target: 5 members within 1.2x of 3, total",
                "and downtime):", "",
                table(scale, [("members", "members"), ("runs", "runs"), ("eg_total", "etcdguard total s"),
                              ("eg_down", "etcdguard downtime s"), ("t_vs3", "total vs 3"),
                              ("d_vs3", "downtime vs 3"), ("scale_met", "<= 1.2x"),
                              ("m_total", "manual s"), ("total_ratio", "total ratio"),
                              ("downtime_ratio", "downtime ratio")]), ""]
    phase_cols = [(f"ph_{p}", p) for p in ("preflight", "stage", "prepare", "fence", "stop", "swap", "start",
                                           "verify", "unfence", "restart-controllers")]
    out += ["Where etcdguard's time goes, phase by phase (median seconds); downtime is fence .. unfence:", "",
            table(rows, [("etcd", "etcd"), ("members", "members"), ("size_mb", "MB"), *phase_cols]), "",
            "The manual script's steps (median seconds):", "",
            table(rows, [("etcd", "etcd"), ("members", "members"), ("size_mb", "MB"), ("ms_stop", "stop (SIGKILL)"),
                         ("ms_restore", "snapshot restore"), ("ms_swap", "swap"),
                         ("ms_start", "start .. healthy")]), ""]
    return out


def dead_section(rows: list[dict[str, Any]]) -> list[str]:
    """The dead-cluster scenario: quorum lost before every run, so the whole of each is downtime."""
    if not rows:
        return []
    rows = sorted(rows, key=lambda r: (r["etcd"], r["size_mb"], r["warm"]))
    phase_cols = [(f"ph_{p}", p) for p in ("preflight", "stage", "prepare", "fence", "stop", "swap", "start",
                                           "verify")]
    return [
        "### A cluster that is already dead",
        "",
        "Before every run (etcdguard's and the manual one's) two of the three members are SIGKILLed and their",
        "data deleted: quorum lost, one survivor without a leader. The manual script restores from the",
        "snapshot file already on every node; etcdguard from the copy its agents hold pre-staged (the bench",
        "waits, untimed, until every member holds it; with warm standby also until every member holds it",
        "restored ahead). Every second is downtime in both, so the ratio compares the totals (the command's",
        "wall clock against the script's).",
        "",
        table(rows, [("etcd", "etcd"), ("size_mb", "data MB"), ("snap_mb", "snapshot MB"), ("warm", "warm standby"),
                     ("runs", "runs"), ("eg_total", "etcdguard total s"), ("m_total", "manual total s"),
                     ("total_ratio", "total ratio"), ("target", "target"), ("total_met", "met"),
                     ("sent_at_restore", "sent at restore"), ("prepared_ahead", "prepared ahead")]),
        "",
        "Its phases (median seconds):",
        "",
        table(rows, [("size_mb", "MB"), ("warm", "warm"), *phase_cols]),
        "",
    ]


def replace_section() -> list[str]:
    """`etcdguardctl replace` against the manual etcdctl procedure (results/replace-*.json)."""
    rows = [r for name in ("replace-3.4", "replace-3.5") if load(name) for r in load(name)["rows"]]
    if not rows:
        return []
    for r in rows:
        r["db_mb"] = round(r["db_bytes"] / 1e6)
        r["eg_healthy"] = rng(r["etcdguard_time_to_healthy"])
        r["eg_total"] = rng(r["etcdguard_total"])
        r["m_total"] = rng(r["manual_total"])
        r["met"] = met(r["healthy_ratio"] <= 1.2)
        for step, d in r["etcdguard_phases"].items():
            r[f"ph_{step}"] = f"{d['median']:.2f}" if d.get("median") is not None else ""
    return [
        "## Member replacement: `etcdguardctl replace` vs the manual etcdctl procedure",
        "",
        "Three real members on loopback, an agent each and a coordinator (tests/helpers/restore_rig.py), filled",
        "with the seeded workload. Runs alternate: m3's etcd is SIGKILLed and its data dir deleted, then the",
        "member is replaced by `etcdguardctl replace m3 --yes --json` or by tests/bench/manual_replace.py",
        "(`member remove`, `member add --learner`, start with `--initial-cluster-state=existing`, wait until",
        "its applied raft index is within 1,000 entries of the leader's, `member promote`, wait healthy; the",
        "membership calls retried while etcd answers \"unhealthy cluster\"). etcdguard's time to healthy is",
        "the summary's `time_to_healthy_seconds`: the operation's start to the end of promote (removed, re-added,",
        "started, caught up, promoted); its total is the command's wall clock, with the plan's survey before and",
        "settle and confirm (the same hashkv on every member) after. Median [min-max] of the runs.",
        "",
        table(rows, [("etcd", "etcd"), ("size_mb", "data MB"), ("db_mb", "db MB"), ("runs", "runs"),
                     ("eg_healthy", "etcdguard time to healthy s"), ("m_total", "manual s"),
                     ("healthy_ratio", "ratio"), ("met", "<= 1.2x"), ("eg_total", "etcdguard total s"),
                     ("total_ratio", "total ratio")]),
        "",
        "Where etcdguard's time goes, step by step (median seconds):",
        "",
        table(rows, [("etcd", "etcd"), ("size_mb", "MB"),
                     *[(f"ph_{p}", p) for p in ("health-check", "retire", "set-aside", "remove", "add-learner",
                                                "join", "catch-up", "promote", "settle", "confirm")]]),
        "",
    ]


def transfer_section() -> list[str]:
    rows = [r for name in ("transfer", "transfer-objects") if load(name) for r in load(name).get("rows", [load(name)])]
    if not rows:
        return []
    for r in rows:
        r["agent_rss_peak_mib"] = round(r.get("agent_rss_peak_during_fetch_kb", 0) / 1024, 1)
        r["pipe_met"] = met(r["ratio_zmq_pipe_to_cp"] >= 0.8)
        r["values"] = r.get("values", "random")
        r["zstd_met"] = met(r["ratio_zstd_fetch_to_cp"] >= 1.0) if r.get("ratio_zstd_fetch_to_cp") else ""
    return [
        "## Vault pull over ZeroMQ CURVE vs `cp` + sync",
        "",
        "A snapshot fetched from a real agent by the coordinator's client (credit-based, 1 MiB chunks,",
        "sha256 and the etcd trailer checked end to end, fsync'ed) against `cp` + `sync` of the same file",
        "on the same disk, alternating, median of the rounds: plain (`fetch`), and compressed as the vault",
        "pulls (`zstd fetch`: the agent compresses each chunk at level 1 as it sends it, the coordinator",
        "decompresses each frame to check the snapshot's sha256 and writes the frames), in MB/s of the",
        "snapshot (logical). `zmq pipe` is bare ZeroMQ over CURVE at the same settings between two processes",
        "(no file, no hashing): the ceiling of the channel on this machine. Agent and coordinator share the",
        "same 2 cores here; in production compression, CURVE encryption and decryption run on different",
        "hosts. `random` is the seeded workload (its values are random bytes: nothing to compress);",
        "`objects` the same keys with Kubernetes-like objects as values.",
        "",
        table(rows, [("values", "values"), ("size_bytes", "bytes"), ("cp_mb_per_s", "cp MB/s"),
                     ("fetch_mb_per_s", "fetch MB/s"), ("ratio_fetch_to_cp", "fetch/cp"),
                     ("zstd_fetch_mb_per_s", "zstd fetch MB/s"), ("ratio_zstd_fetch_to_cp", "zstd fetch/cp"),
                     ("zstd_met", ">= 1.0x"), ("zstd_ratio", "zstd ratio"), ("zmq_pipe_mb_per_s", "zmq pipe MB/s"),
                     ("ratio_zmq_pipe_to_cp", "pipe/cp"), ("pipe_met", "pipe >= 0.8x cp"),
                     ("agent_rss_peak_mib", "agent peak RSS MiB")]),
        "",
    ]


def compression_section() -> list[str]:
    rows = [r for name in ("compression", "compression-objects") if load(name) for r in load(name)["rows"]]
    if not rows:
        return []
    for r in rows:
        r["snap_mb"] = round(r["snapshot_bytes"] / 1e6)
        r["stored_mb"] = round(r["stored_bytes"] / 1e6, 1)
    return [
        "## zstd on etcd snapshots: ratio and speed",
        "",
        "`etcdctl snapshot save` of one member growing through the sizes (the seeded workload), compressed",
        "as a pull compresses it: one independent frame per 1 MiB chunk, one thread (the agent's socket",
        "loop); read back as every reader does: decompressed across the frames and sha256-hashed, one",
        "thread. `one stream` is the `zstd` tool's ratio on the whole file at the same level (what",
        "independent frames give up). `random` values are incompressible (the seeded workload); `objects`",
        "are Kubernetes-like JSON objects. MB/s are of the snapshot, median of the repeats.",
        "",
        table(rows, [("values", "values"), ("size_mb", "data MB"), ("snap_mb", "snapshot MB"), ("level", "level"),
                     ("stored_mb", "stored MB"), ("ratio", "ratio"), ("one_stream_ratio", "one stream ratio"),
                     ("compress_mb_per_s", "compress MB/s"), ("read_back_mb_per_s", "decompress + sha256 MB/s")]),
        "",
    ]


def drill_section() -> list[str]:
    d = load("drill")
    if not d:
        return []
    row = {"etcd": d["etcd"], "size_mb": d["size_mb"], "snap_mb": round(d["snapshot_bytes"] / 1e6),
           "stored_mb": round(d["stored_bytes"] / 1e6, 1), "runs": d["runs"], "drill": rng(d["drill"]),
           "manual": rng(d["manual"]), "ratio": d["ratio_to_manual"],
           **{k: rng(v) for k, v in d["phases"].items()}}
    return [
        "## Restore drill",
        "",
        "A drill of a compressed directory-vault entry (coordinator/drill/: the copy read back,",
        "decompressed and sha256-checked; `etcdutl snapshot restore` into a scratch dir; etcd started on",
        "loopback; revision, key count, hashkv and 64 keys checked; everything removed and proven gone)",
        "against the same by hand (`zstd -d`, `etcdutl snapshot restore`, start etcd, wait until it serves,",
        "`etcdctl endpoint hashkv`, stop, remove), alternating. Seconds are median [min-max].",
        "",
        table([row], [("etcd", "etcd"), ("size_mb", "data MB"), ("snap_mb", "snapshot MB"),
                      ("stored_mb", "stored MB"), ("runs", "runs"), ("drill", "drill s"), ("manual", "by hand s"),
                      ("ratio", "ratio"), ("read back", "read back s"), ("restore + start", "restore + start s"),
                      ("checks + removal", "checks + removal s")]),
        "",
    ]


def idle_section() -> list[str]:
    idle = load("idle")
    if not idle:
        return []
    for r in idle["rows"]:
        r["cpu_ok"] = met(r["cpu_met"])
        r["rss_ok"] = met(r["rss_met"])
    return [
        "## Idle cost",
        "",
        f"Three agents and a coordinator (etcd {idle['etcd']}, 3 members, CURVE, metrics on) left alone for "
        f"{idle['seconds']} s after the coordinator's first vault pull, each metrics endpoint scraped every "
        f"{idle['scrape_every']:g} s ({idle['scrapes_per_endpoint']} scrapes). CPU is utime + stime over the",
        "window, in % of one core; RSS is VmRSS at its end. Targets: CPU < 0.5 %, RSS <= 60 MB per daemon.",
        "",
        table(idle["rows"], [("process", "process"), ("cpu_percent", "CPU %"), ("cpu_ok", "< 0.5 %"),
                             ("rss_mib", "RSS MiB"), ("peak_rss_mib", "peak RSS MiB"), ("rss_ok", "<= 60 MB")]),
        "",
    ]


def continuous_section() -> list[str]:
    c = load("continuous") or load("continuous-quick")
    if not c or "load" not in c:
        return []
    ld, rs = c["load"], c.get("restore") or {}
    agent = ld["capturing_member"]
    cpu = ld["cpu_percent"].get(agent)
    idle = [v for k, v in ld["cpu_percent"].items() if k not in (agent, "coordinator") and v is not None]
    rss = ld["rss_mib_max"].get(agent)
    durable = ld["durable_lag_seconds"]
    load_rows: list[dict[str, Any]] = [{
        "asked": f"{c['rate']:.0f}", "got": ld["writes_per_second"], "seconds": ld["seconds"],
        "at_rate": ld["writes_per_second"] >= 0.9 * c["rate"],
        "lag": f"{ld['lag_metric_seconds']['p50']} / {ld['lag_metric_seconds']['p99']}",
        "durable": f"{durable['p50']} / {durable['p99']}", "durable_met": met(durable["p99"] is not None
                                                                               and durable["p99"] <= 5.0),
        "seen": ld["seen_lag_seconds"]["p99"], "cpu": cpu, "cpu_met": met(cpu is not None and cpu <= 15.0),
        "cpu_per_write": round(10 * cpu / ld["writes_per_second"], 3) if cpu else "",
        "idle_cpu": max(idle) if idle else "", "rss": rss, "peak": ld.get("capturing_agent_peak_rss_mib"),
        "rss_met": met(ld.get("capturing_agent_peak_rss_mib") is not None
                       and ld["capturing_agent_peak_rss_mib"] <= 100),
        "coord": ld["cpu_percent"].get("coordinator"), "segments": ld["segments"],
        "mb": round(ld["segment_bytes"] / 1e6, 1),
    }]
    out = [
        "## Continuous backup: capture under load, replay, point-in-time restore",
        "",
        f"tests/bench/bench_continuous.py{' --quick' if c.get('quick') else ''}: 3 members (etcd {c['etcd']}), an",
        "agent each, a coordinator with a directory vault and `[continuous]` at its defaults (flush 5 s, 4 MiB",
        f"segments); {c['size_mb']} MB of the seeded workload and one full snapshot, then puts of"
        f" {c['value_size']} bytes asked at {c['rate']:.0f}/s for {c['seconds']:.0f} s from 4 processes. 'got' is",
        "what the cluster took on this shared machine. Lag (s, p50 / p99): the coordinator's",
        "`etcdguard_continuous_lag_seconds` sampled every second; 'durable' per write (every 50th), from the write",
        "returning to the segment holding it written to the vault (its file's mtime); 'seen' to the capturing",
        "agent seeing it. CPU is utime + stime over the load, in % of one core ('others': the agents that do not",
        "capture); RSS is VmRSS's maximum over the load and the capturing agent's VmHWM over the whole run.",
        "",
        table(load_rows, [("asked", "writes/s asked"), ("got", "got"), ("seconds", "s"), ("lag", "lag metric"),
                          ("durable", "durable lag"), ("durable_met", "p99 <= 5 s"), ("seen", "seen p99"),
                          ("cpu", "agent CPU %"), ("cpu_per_write", "agent CPU ms/write"), ("cpu_met", "<= 15 %"),
                          ("idle_cpu", "others CPU %"),
                          ("rss", "agent RSS MiB"), ("peak", "agent peak MiB"), ("rss_met", "<= 100 MB"),
                          ("coord", "coordinator CPU %"), ("segments", "segments"), ("mb", "segment MB")]),
        "",
    ]
    if not load_rows[0]["at_rate"]:
        out += [f"The cluster took {ld['writes_per_second']} writes/s, not {c['rate']:.0f}: the targets (lag, CPU) "
                "are for 1,000/s, so their 'met' here is at the lower rate; the agent's CPU per write is the figure",
                "that carries over (at 1,000 writes/s: 100 times it, in % of a core).", ""]
    if rs:
        eps = rs["replay_events_per_second"]
        out += [
            "Then, alternating (capture off, so no full snapshot of each restored cluster runs under the next",
            "timing): `etcdguardctl restore --to-revision LAST --yes` (the base restored into a scratch etcd, every",
            "captured revision replayed as one transaction, snapshotted, verified, stored, then the ordinary",
            "restore) and `etcdguardctl restore BASE --yes` (pre-staged). Seconds: median [min-max].",
            "",
            table([{"events": rs["events_replayed"], "revs": rs["revisions_replayed"],
                    "eps": rng(eps, 0), "eps_met": met(eps["median"] is not None and eps["median"] >= 20000),
                    "build": rng(rs["build_seconds"], 1), "pit": rng(rs["point_in_time_seconds"], 1),
                    "plain": rng(rs["plain_seconds"], 1), "ratio": rs["ratio"],
                    "ratio_met": met(rs["ratio"] is not None and rs["ratio"] <= 2.0)}],
                  [("events", "events replayed"), ("revs", "revisions"), ("eps", "replay events/s"),
                   ("eps_met", ">= 20,000"), ("build", "build s"), ("pit", "point-in-time s"),
                   ("plain", "plain s"), ("ratio", "ratio"), ("ratio_met", "<= 2x")]),
            "",
            "Where the replay's time goes: one transaction per captured revision, each applied by etcd before",
            "the next is sent (a revision's number is its place in that order, so transactions cannot be sent",
            "ahead: etcd may apply concurrent requests in any order; tried with a compare on the previous",
            "revision's key, out-of-order arrivals made it slower). Measured alone on this machine, a sequential",
            "1 KB put-transaction to a scratch etcd (`--unsafe-no-fsync`) takes 0.8-0.9 ms: about 0.45 ms of CPU",
            "in the Python gRPC client and 0.45-0.5 ms in etcd, so the replay tops out near 1,200-1,400",
            "revisions a second here however it is driven from Python.",
            "",
        ]
    return out


def last_run() -> str:
    """When the last full or quick run ended and how long it took (results/run.json)."""
    info = load("run")
    if not info:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"{info['ended']} ({'quick' if info['quick'] else 'full'} run, {info['minutes']} min)"


def render() -> str:
    versions = sorted({r["etcd"] for r in cluster_rows()} | {r["etcd"] for name in ("snapshot-3.4", "snapshot-3.5")
                                                              if load(name) for r in load(name)["rows"]})
    parts = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`tests/bench/run.py`; `make bench QUICK=1` is a small smoke run); raw",
        "numbers in `tests/bench/results/*.json`. Every ratio compares etcdguard with the manual procedure",
        "on the same data in the same run, runs alternating A/B so both see the same noise. The machine is",
        "shared: read ratios and ranges, not absolute seconds. A full run needs about"
        f" {NEEDS_FREE // 2**30} GiB free in the temporary directory (`TMPDIR`); each script's time is in"
        " `results/run.json`.",
        "",
        f"Last run: {last_run()}, {machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, etcd {', '.join(versions) or '-'}.",
        "",
    ]
    parts += snapshot_section()
    parts += cluster_section()
    parts += replace_section()
    restores = [r for name in ("restore-3.4", "restore-3.5") if load(name) for r in load(name)["rows"]]
    if restores:
        parts += [
            "## Single-member restore: downtime",
            "",
            "Manual: stop etcd, `snapshot restore` into a new dir, swap dirs, start, wait healthy (all of it is",
            "downtime). etcdguard restores into the new dir while etcd still runs; downtime is stop -> start",
            "healthy, read from the operation journal.",
            "",
            table(restores, [("etcd", "etcd"), ("size_mb", "data MB"), ("manual_downtime_seconds", "manual downtime s"),
                             ("etcdguard_downtime_seconds", "etcdguard downtime s"),
                             ("downtime_ratio_etcdguard_to_manual", "downtime ratio"),
                             ("etcdguard_total_seconds", "etcdguard total s")]),
            "",
        ]
    parts += transfer_section()
    parts += compression_section()
    vault = load("vault")
    if vault:
        parts += [
            "## Vault push and pull: S3 (moto_server on loopback) and directory, with and without age",
            "",
            "push: `Vault.add_file` (size, sha256 and trailer checked, compressed with zstd level 1 when",
            "configured, encrypted with `age` when configured, uploaded in 16 MiB parts or written with",
            "fsync); pull: `etcdguardctl export`'s path (downloaded, decrypted, decompressed, sha256 verified,",
            "written with fsync). Ratios against `cp` + `sync` of the same file",
            f"({vault['cp_mb_per_s']} MB/s, {vault['size_bytes']} bytes of {vault.get('data', 'synthetic')} data:",
            "random bytes do not compress, so the zstd rows show what compression costs when it saves",
            "nothing). moto_server is a Python process on the same 2 cores, so the S3 rows measure it as",
            "much as etcdguard; peak RSS is the coordinator-side process's VmHWM (flat with the snapshot's",
            "size), age's is its own.",
            "",
            table(vault["rows"], [("backend", "backend"), ("encrypted", "age"), ("compression", "compression"),
                                  ("push_mb_per_s", "push MB/s"),
                                  ("push_ratio_to_cp", "push/cp"), ("pull_mb_per_s", "pull MB/s"),
                                  ("pull_ratio_to_cp", "pull/cp"), ("push_peak_rss_mib", "push peak RSS MiB"),
                                  ("pull_peak_rss_mib", "pull peak RSS MiB"), ("age_peak_rss_mib", "age RSS MiB")]),
            "",
        ]
    parts += drill_section()
    parts += idle_section()
    parts += continuous_section()
    from tests.bench.profile_notes import where_the_time_goes

    parts += where_the_time_goes(load, cluster_rows())
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (a smoke run, about 6 min)")
    ap.add_argument("--render", action="store_true", help="only write docs/benchmarks.md from the results")
    args = ap.parse_args()
    started = time.monotonic()
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if not args.render and not args.quick and free < NEEDS_FREE:
        print(f"warning: {free / 2**30:.1f} GiB free in {tempfile.gettempdir()}; the 1 GB cluster restores need "
              f"about {NEEDS_FREE / 2**30:.0f} GiB (data, prepared and kept dirs on 3 members, staged copies, "
              "vault)", file=sys.stderr, flush=True)
    if not args.render:
        for old in RESULTS.glob("cluster-restore-*.json"):
            old.unlink()   # a quick run after a full one must not mix with its rows
        if args.quick:
            run("bench_snapshot.py", "--sizes-mb", "30", "--build", "3.5", "--repeat", "1")
            run("bench_cluster_restore.py", "--build", "3.5", "--members", "3", "--sizes-mb", "30", "--runs", "1")
            run("bench_cluster_restore.py", "--build", "3.5", "--scenario", "dead", "--sizes-mb", "30", "--runs", "1")
            run("bench_replace.py", "--build", "3.5", "--size-mb", "30", "--runs", "1")
            run("bench_transfer.py", "--size-mb", "30", "--rounds", "1", "--json", str(RESULTS / "transfer.json"))
            run("bench_compression.py", "--sizes-mb", "30", "--repeat", "1")
            run("bench_drill.py", "--size-mb", "30", "--runs", "1")
            run("bench_idle.py", "--seconds", "15")
            run("bench_continuous.py", "--quick")
        else:
            for build in ("3.4", "3.5"):
                run("bench_snapshot.py", "--sizes-mb", "100,300,1000", "--build", build, "--repeat", "3")
                run("bench_restore.py", "--size-mb", "300", "--build", build, "--repeat", "3")
                run("bench_cluster_restore.py", "--build", build, "--members", "3", "--sizes-mb", "300,1000",
                    "--runs", "5")
            for warm in ((), ("--warm",)):
                run("bench_cluster_restore.py", "--build", "3.5", "--scenario", "dead", *warm, "--sizes-mb",
                    "300,1000", "--runs", "3")
            for members in ("1", "5"):
                run("bench_cluster_restore.py", "--build", "3.5", "--members", members, "--sizes-mb", "300",
                    "--runs", "5")
            run("bench_replace.py", "--build", "3.5", "--size-mb", "300", "--runs", "3")
            run("bench_transfer.py", "--size-mb", "300", "--json", str(RESULTS / "transfer.json"))
            run("bench_transfer.py", "--size-mb", "300", "--values", "objects", "--json",
                str(RESULTS / "transfer-objects.json"))
            run("bench_compression.py", "--sizes-mb", "300,1000")
            run("bench_compression.py", "--sizes-mb", "300", "--values", "objects")
            run("bench_vault.py", "--size-mb", "300", "--runs", "2")
            run("bench_drill.py", "--size-mb", "300", "--runs", "3")
            run("bench_idle.py", "--seconds", "60")
            run("bench_continuous.py")
    if not args.render:
        (RESULTS / "run.json").write_text(json.dumps({
            "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "scripts": [{"run": name, "seconds": s} for name, s in TIMES]}, indent=2) + "\n")
    DOC.write_text(render() + "\n")
    print(f"wrote {DOC} ({(time.monotonic() - started) / 60:.1f} min)")
    if FAILED:
        print("failed: " + "; ".join(FAILED), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
