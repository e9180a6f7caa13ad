"""Vault push (into the vault) and pull (export, verified) throughput against `cp` of the same file, for the
S3 backend on a loopback moto_server and the directory backend, with and without age encryption, stored
as it is or zstd-compressed; and the peak RSS of the coordinator-side process (and of age), which must not
grow with the snapshot. The snapshot is random bytes by default (incompressible: what compression costs
when it saves nothing); ``--data synthetic`` repeats one block (compresses almost to nothing).

    python tests/bench/bench_vault.py [--size-mb 300] [--runs 2]    -> tests/bench/results/vault.json
    python tests/bench/bench_vault.py worker JSON                   (one measured operation, in a fresh process)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "tests" / "bench" / "results"


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One push or pull in this process: its wall time and this process's peak RSS."""
    from etcdguard.common.snapshot.integrity import digest_file
    from etcdguard.coordinator.config import parse_coordinator_config
    from etcdguard.coordinator.vault.factory import open_vault
    from etcdguard.coordinator.vault.store import Incoming

    config = parse_coordinator_config(spec["config"], "bench.toml")
    vault = open_vault(config)
    vault.prepare()
    snap = Path(spec["snapshot"])
    started = time.perf_counter()
    if spec["op"] == "push":
        d = digest_file(snap)
        incoming = Incoming(sha256=d.sha256, size=d.size, source_member="m1", original_name="snap-r1.db",
                            revision=int(spec.get("revision", 1)), cluster_id="c1", member_id="a1",
                            etcd_version="3.5.16", created_at="", created_unix=time.time())
        started = time.perf_counter()   # the hash above is the caller's: an agent's metadata carries it
        _, pulled = vault.add_file(snap, incoming)
        assert pulled
    else:
        entry = vault.resolve("latest")
        vault.export(entry, Path(spec["output"]))
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_kib": vm_hwm_kib(), "age_peak_rss_kib": children}


def measure(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['op']} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def vault_config(work: Path, backend: str, endpoint: str, bucket: str, creds: Path, recipient: str,
                 identity: Path, compression: str = "zstd") -> dict[str, Any]:
    vault: dict[str, Any] = {"backend": backend, "dir": str(work / f"vault-{bucket}"), "compression": compression}
    if recipient:
        vault.update(encrypt_to=[recipient], age_identity=str(identity))
    if backend == "s3":
        vault["s3"] = {"bucket": bucket, "endpoint": endpoint, "path_style": True, "credentials_file": str(creds)}
    return {"coordinator": {"state_dir": str(work / "state")}, "vault": vault}


def cp_seconds(src: Path, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sync", str(dest)], check=True)
    took = time.perf_counter() - started
    dest.unlink()
    return took


def main() -> int:
    from tests.helpers.s3 import MotoServer, age_keypair, quiet_env, random_snapshot, synthetic_snapshot

    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--data", choices=("random", "synthetic"), default="random")
    ap.add_argument("--compression", default="none,zstd", help="vault compressions to measure (default both)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="etcdguard-bench-vault-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    moto = MotoServer(work / "moto").start()
    env = quiet_env()
    try:
        identity, recipient = age_keypair(work / "keys")
        creds = moto.credentials_file(work / "s3.credentials")
        snap = work / "snap.db"
        (random_snapshot if args.data == "random" else synthetic_snapshot)(snap, args.size_mb << 20)
        size = snap.stat().st_size
        mb = size / 1e6
        cps = [cp_seconds(snap, work / "copy.db") for _ in range(args.runs)]
        cp_rate = mb / statistics.median(cps)
        rows = []
        combos = [(b, e, c) for c in args.compression.split(",") for b in ("s3", "dir") for e in (False, True)]
        for backend, encrypted, compression in combos:
            pushes, pulls = [], []
            for run in range(args.runs):
                bucket = f"bench-{backend}-{int(encrypted)}-{compression}-{run}"
                if backend == "s3":
                    moto.create_bucket(bucket)
                config = vault_config(work, backend, moto.endpoint, bucket, creds,
                                      recipient if encrypted else "", identity, compression)
                pushes.append(measure({"op": "push", "config": config, "snapshot": str(snap)}, env))
                out = work / "export.db"
                pulls.append(measure({"op": "pull", "config": config, "snapshot": str(snap),
                                      "output": str(out)}, env))
                assert out.stat().st_size == size
                out.unlink()
                shutil.rmtree(work / f"vault-{bucket}", ignore_errors=True)
                if backend == "s3":
                    client = moto.client()
                    for key in moto.keys_in_bucket(bucket):
                        client.delete_object(Bucket=bucket, Key=key)
            push_s = statistics.median(p["seconds"] for p in pushes)
            pull_s = statistics.median(p["seconds"] for p in pulls)
            rows.append({
                "backend": backend, "encrypted": encrypted, "compression": compression,
                "push_mb_per_s": round(mb / push_s, 1), "pull_mb_per_s": round(mb / pull_s, 1),
                "push_ratio_to_cp": round(mb / push_s / cp_rate, 3),
                "pull_ratio_to_cp": round(mb / pull_s / cp_rate, 3),
                "push_peak_rss_mib": round(max(p["peak_rss_kib"] for p in pushes) / 1024, 1),
                "pull_peak_rss_mib": round(max(p["peak_rss_kib"] for p in pulls) / 1024, 1),
                "age_peak_rss_mib": round(max(p["age_peak_rss_kib"] for p in pushes + pulls) / 1024, 1),
            })
            print(json.dumps(rows[-1]), flush=True)
        result = {"size_bytes": size, "runs": args.runs, "cp_mb_per_s": round(cp_rate, 1), "rows": rows,
                  "data": args.data,
                  "note": "push: Vault.add_file (checks, compresses, encrypts, uploads); pull: export (downloads, "
                          "decrypts, decompresses, verifies the sha256, writes with fsync); cp: cp + sync of the "
                          "same file"}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "vault.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
