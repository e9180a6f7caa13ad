"""A restore drill's duration, against the same drill done by hand, on a snapshot of the seeded workload.

One etcd member is filled (tests/bench/workload.py) and snapshotted as the agent does (hashkv and key count
recorded); the snapshot goes into a compressed directory vault. Then, alternating: the coordinator's drill
(coordinator/drill/: the vault copy read back (decompressed, sha256 checked), `etcdutl snapshot restore`
into a scratch dir, etcd started on loopback, revision, key count, hashkv and a 64-key sample checked, all
of it removed) and the manual equivalent an operator would script (`zstd -d` of the same object, `etcdutl
snapshot restore`, start etcd, wait until it serves, `etcdctl endpoint hashkv`, stop, remove). Seconds are
median [min-max]; the drill's phases are timed from its progress.

    python tests/bench/bench_drill.py --size-mb 300 [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
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

from etcdguard.agent.discovery.member import ClientTLS  # noqa: E402
from etcdguard.agent.snapshots.take import Source, save_to_file  # noqa: E402
from etcdguard.common.etcd.scratch import EtcdBinaries  # noqa: E402
from etcdguard.common.snapshot import compression  # noqa: E402
from etcdguard.common.snapshot.tools import probe_tool  # noqa: E402
from etcdguard.coordinator.drill.checks import Recorded, verdict  # noqa: E402
from etcdguard.coordinator.drill.run import drill_file  # noqa: E402
from etcdguard.coordinator.vault.entry import Incoming  # noqa: E402
from etcdguard.coordinator.vault.store import Vault  # noqa: E402

from tests.bench.common import save, spread  # noqa: E402
from tests.bench.workload import MB, fill_member  # noqa: E402
from tests.helpers.etcd import EtcdMember, build_for  # noqa: E402


def drill_once(vault: Vault, binaries: EtcdBinaries, scratch: Path) -> dict[str, Any]:
    entry = vault.list()[0]
    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    with vault.materialize(entry) as path:
        marks.append(("read back", time.perf_counter()))
        outcome = drill_file(binaries, path, Recorded.of(entry), scratch,
                             phase=lambda what: marks.append((what.split(" (")[0], time.perf_counter())))
    ended = time.perf_counter()
    ok, _, message = verdict(entry.sha256, outcome.checks)
    assert ok, message
    assert not list(scratch.iterdir()), "the drill left something in the scratch dir"
    at = dict(marks)
    checking = next(t for name, t in marks if name.startswith("checking"))
    phases = {"read back": at["read back"] - started, "restore + start": checking - at["read back"],
              "checks + removal": ended - checking}
    return {"seconds": ended - started, "phases": phases}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manual_once(packed: Path, binaries: EtcdBinaries, work: Path, revision: int) -> float:
    """The same drill by hand: decompress, restore, start, wait until it serves, hashkv, stop, remove."""
    d = work / "manual"
    started = time.perf_counter()
    d.mkdir()
    plain = d / "snap.db"
    subprocess.run(["zstd", "-d", "-q", "-o", str(plain), str(packed)], check=True)
    peer, client = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    tool = binaries.tool
    subprocess.run([str(tool.path), "snapshot", "restore", str(plain), "--data-dir", str(d / "data"), "--name", "m",
                    "--initial-cluster", f"m={peer}", "--initial-advertise-peer-urls", peer],
                   check=True, capture_output=True, env=tool.env())
    proc = subprocess.Popen([str(binaries.etcd), "--name", "m", "--data-dir", str(d / "data"), "--listen-client-urls",
                             client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
                             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"m={peer}",
                             "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    etcdctl = str(Path(binaries.etcd).parent / "etcdctl")
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([etcdctl, f"--endpoints={client}", "endpoint", "health"], capture_output=True,
                             check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the manual drill's etcd did not serve")
            time.sleep(0.05)
        out = subprocess.run([etcdctl, f"--endpoints={client}", "endpoint", "hashkv", f"--rev={revision}", "-w",
                              "json"], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)[0]["HashKV"]["hash"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        shutil.rmtree(d)
    return time.perf_counter() - started


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--build", choices=("3.4", "3.5"), default="3.5")
    args = ap.parse_args(argv)
    build = build_for(args.build)
    if build is None:
        print("no etcd build found (bash scripts/install-etcd.sh)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="etcdguard-bench-drill-", dir="/var/tmp"))
    member = EtcdMember(build, work / "etcd")
    try:
        member.launch()
        fill_member(member, args.size_mb * MB)
        binaries = EtcdBinaries(build.etcd, probe_tool(build.restore_tool))
        snap = work / "snap.db"
        meta = save_to_file(Source(member.client_url, ClientTLS(None, None, None), "m1"), snap, tool=binaries.tool)
        member.stop(kill=True)   # the live member is not needed (a drill never asks it): it only adds noise
        vault = Vault(work / "vault", compression=compression.ZSTD)
        vault.prepare()
        entry, _ = vault.add_file(snap, Incoming.from_agent("m1", meta.to_json()))
        snap.unlink()
        scratch = work / "scratch"
        drills, manual = [], []
        for i in range(args.runs):
            d = drill_once(vault, binaries, scratch)
            m = manual_once(Path(entry.path), binaries, work, entry.revision)
            drills.append(d)
            manual.append(m)
            phases = ", ".join(f"{k} {v:.2f}" for k, v in d["phases"].items())
            print(f"run {i + 1}: drill {d['seconds']:.2f} s ({phases}), by hand {m:.2f} s", file=sys.stderr)
        median = statistics.median(d["seconds"] for d in drills)
        result = {"etcd": build.version, "size_mb": args.size_mb, "snapshot_bytes": entry.size,
                  "stored_bytes": entry.stored_size, "runs": args.runs,
                  "drill": spread([d["seconds"] for d in drills]),
                  "phases": {k: spread([d["phases"][k] for d in drills]) for k in drills[0]["phases"]},
                  "manual": spread(manual), "ratio_to_manual": round(median / statistics.median(manual), 3)}
        save("drill", result)
        print(json.dumps(result, indent=2))
        return 0
    finally:
        member.stop(kill=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
