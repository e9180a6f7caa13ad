"""`make bench`: every benchmark in one run, results as JSON (tests/bench/results/) and as
the tables in docs/benchmarks.md. Ratios compare etcdguard with the plain etcdctl
procedure on the same data in the same run; nothing here is a pass/fail test.

    python tests/bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tests" / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def run(script: str, *args: str) -> None:
    path = ROOT / "tests" / "bench" / script
    if not path.exists():
        print(f"skipping {script}: not present")
        return
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(path), *args], check=True, cwd=ROOT)


def load(name: str) -> Any:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    out = ["| " + " | ".join(title for _, title in columns) + " |",
           "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(out)


def render() -> str:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    parts = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`tests/bench/run.py`); raw numbers in `tests/bench/results/*.json`.",
        "Every ratio compares etcdguard with the plain etcdctl procedure on the same member and data,",
        "in the same run. Single runs on a shared machine are noisy: read ratios, not absolute seconds.",
        "",
        f"Last run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.python_implementation()} "
        f"{platform.python_version()}, {cpu or platform.machine()}.",
        "",
    ]
    snaps = [r for name in ("snapshot-3.4", "snapshot-3.5") if load(name) for r in load(name)["rows"]]
    if snaps:
        parts += [
            "## Snapshot: `etcdguard-agent snapshot` vs `etcdctl snapshot save` + `snapshot status`",
            "",
            "Both write the file, fsync it and read its revision; etcdguard also verifies the SHA-256",
            "trailer and records metadata. Time ratio < 1 means etcdguard is faster. \"etcdguard s\" is the",
            "whole `etcdguard-agent snapshot` command (Python start-up included); \"in-process\" times the",
            "snapshot alone in a warm process, which is what the daemon's scheduled backups cost. Peak RSS",
            "is the command's VmHWM (flat with size: the stream is never held in memory).",
            "",
            table(snaps, [("etcd", "etcd"), ("size_mb", "data MB"), ("snapshot_bytes", "snapshot bytes"),
                          ("manual_seconds", "etcdctl s"), ("agent_seconds", "etcdguard s"),
                          ("time_ratio_agent_to_manual", "time ratio"),
                          ("agent_in_process_seconds", "etcdguard in-process s"),
                          ("in_process_ratio_to_manual", "in-process ratio"),
                          ("agent_peak_rss_mib", "peak RSS MiB")]),
            "",
        ]
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
    transfer = load("transfer")
    if transfer:
        rows = transfer.get("rows", [transfer])
        for r in rows:
            r["agent_rss_peak_mib"] = round(r.get("agent_rss_peak_during_fetch_kb", 0) / 1024, 1)
        parts += [
            "## Vault pull over ZeroMQ CURVE vs `cp` + sync",
            "",
            "A snapshot fetched from a real agent by the coordinator's client (credit-based, 1 MiB chunks,",
            "sha256 and the etcd trailer checked end to end, fsync'ed) against `cp` + `sync` of the same file",
            "on the same disk. `zmq pipe` is bare ZeroMQ over CURVE at the same settings (no file, no",
            "hashing): the ceiling of the channel on this machine. Agent and coordinator share the same 2",
            "cores here; in production CURVE encryption and decryption run on different hosts.",
            "",
            table(rows, [("size_bytes", "bytes"), ("cp_mb_per_s", "cp MB/s"), ("fetch_mb_per_s", "fetch MB/s"),
                         ("ratio_fetch_to_cp", "ratio fetch/cp"), ("zmq_pipe_mb_per_s", "zmq pipe MB/s"),
                         ("agent_rss_peak_mib", "agent peak RSS MiB")]),
            "",
        ]
    vault = load("vault")
    if vault:
        parts += [
            "## Vault push and pull: S3 (moto_server on loopback) and directory, with and without age",
            "",
            "push: `Vault.add_file` (size, sha256 and trailer checked, encrypted with `age` when configured,",
            "uploaded in 16 MiB parts or written with fsync); pull: `etcdguardctl export`'s path (downloaded,",
            "decrypted, sha256 verified, written with fsync). Ratios against `cp` + `sync` of the same file",
            f"({vault['cp_mb_per_s']} MB/s, {vault['size_bytes']} bytes). moto_server is a Python process on the",
            "same 2 cores, so the S3 rows measure it as much as etcdguard; peak RSS is the coordinator-side",
            "process's VmHWM (flat with the snapshot's size), age's is its own.",
            "",
            table(vault["rows"], [("backend", "backend"), ("encrypted", "age"), ("push_mb_per_s", "push MB/s"),
                                  ("push_ratio_to_cp", "push/cp"), ("pull_mb_per_s", "pull MB/s"),
                                  ("pull_ratio_to_cp", "pull/cp"), ("push_peak_rss_mib", "push peak RSS MiB"),
                                  ("pull_peak_rss_mib", "pull peak RSS MiB"), ("age_peak_rss_mib", "age RSS MiB")]),
            "",
        ]
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (a smoke run)")
    args = ap.parse_args()
    sizes, size, repeat = ("50", "50", "1") if args.quick else ("100,300", "300", "3")
    for build in ("3.4", "3.5"):
        run("bench_snapshot.py", "--sizes-mb", sizes, "--build", build, "--repeat", repeat)
        run("bench_restore.py", "--size-mb", size, "--build", build, "--repeat", repeat)
    run("bench_transfer.py", "--size-mb", size, "--json", str(RESULTS / "transfer.json"))
    run("bench_vault.py", "--size-mb", size, "--runs", "1" if args.quick else "2")
    DOC.write_text(render() + "\n")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
