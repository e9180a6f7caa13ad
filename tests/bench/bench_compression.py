"""zstd on etcd snapshots of the seeded workload: ratio and speed, as the vault uses it.

One etcd member grows through the sizes (tests/bench/workload.py, topped up with new keys); at each size
`etcdctl snapshot save` writes a snapshot, which is then compressed the way a pull compresses it (one
independent zstd frame per 1 MiB chunk, one thread: the agent's socket loop) at each level, and read back
the way every reader does (decompressed across frames and hashed with sha256, one thread). For reference
the `zstd` tool compresses the whole file as one stream at the same level (what independent frames cost in
ratio). The workload's values are random bytes (incompressible: the worst case); ``--values objects``
fills the member with Kubernetes-like objects instead (as compressible as real API objects).

    python tests/bench/bench_compression.py --sizes-mb 300,1000 [--levels 1,3] [--values objects]
"""

from __future__ import annotations

import argparse
import hashlib
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

from etcdguard.common.snapshot import compression  # noqa: E402

from tests.bench.common import save  # noqa: E402
from tests.bench.workload import MB, fill_member  # noqa: E402
from tests.helpers.etcd import EtcdMember, build_for  # noqa: E402

FRAME = 1 << 20


def compress_frames(src: Path, out: Path, level: int) -> float:
    """Seconds to compress ``src`` into ``out`` one 1 MiB frame at a time (as the agent sends a pull)."""
    started = time.perf_counter()
    with open(src, "rb", buffering=0) as fh, open(out, "wb") as dest:
        while True:
            data = fh.read(FRAME)
            if not data:
                break
            dest.write(compression.compress_frame(data, level))
    return time.perf_counter() - started


def read_back(packed: Path, sha256: str) -> float:
    """Seconds to decompress ``packed`` across frames and hash it (what every reader of the vault does)."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(packed, "rb") as fh:
        reader = compression.decompressing(fh)
        while True:
            data = reader.read(FRAME)
            if not data:
                break
            digest.update(data)
    took = time.perf_counter() - started
    assert digest.hexdigest() == sha256, "the frames do not decompress to the snapshot"
    return took


def one_stream(src: Path, out: Path, level: int) -> int:
    """Bytes of the whole file as one zstd stream (the zstd tool, one thread): the ratio frames give up."""
    subprocess.run(["zstd", f"-{level}", "-T1", "-q", "-f", "-o", str(out), str(src)], check=True, timeout=3600)
    return out.stat().st_size


def measure(snap: Path, levels: list[int], repeat: int, work: Path) -> list[dict[str, Any]]:
    size = snap.stat().st_size
    digest = hashlib.sha256()
    with open(snap, "rb") as fh:
        for block in iter(lambda: fh.read(FRAME), b""):
            digest.update(block)
    sha = digest.hexdigest()
    rows = []
    for level in levels:
        packed = work / f"snap.{level}.zst"
        comp = [compress_frames(snap, packed, level) for _ in range(repeat)]
        stored = packed.stat().st_size
        back = [read_back(packed, sha) for _ in range(repeat)]
        packed.unlink()
        stream = one_stream(snap, work / "stream.zst", level) if shutil.which("zstd") else None
        (work / "stream.zst").unlink(missing_ok=True)
        c, d = statistics.median(comp), statistics.median(back)
        rows.append({"level": level, "snapshot_bytes": size, "stored_bytes": stored,
                     "ratio": round(size / stored, 3), "compress_mb_per_s": round(size / c / MB, 1),
                     "read_back_mb_per_s": round(size / d / MB, 1),
                     "one_stream_ratio": round(size / stream, 3) if stream else None,
                     "compress_seconds": [round(t, 3) for t in comp], "read_back_seconds": [round(t, 3) for t in back]})
        print(f"  level {level}: ratio {size / stored:.3f} (one stream {size / stream if stream else 0:.3f}), "
              f"compress {size / c / MB:.0f} MB/s, decompress + sha256 {size / d / MB:.0f} MB/s", file=sys.stderr)
    return rows


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-mb", default="300,1000", help="MB of values at each step (default 300,1000)")
    ap.add_argument("--levels", default="1,3", help="zstd levels (default 1,3)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--values", choices=("random", "objects"), default="random")
    ap.add_argument("--build", choices=("3.4", "3.5"), default="3.5")
    ap.add_argument("--name", default="", help="results file name (default compression or compression-objects)")
    args = ap.parse_args(argv)
    build = build_for(args.build)
    if build is None:
        print("no etcd build found (bash scripts/install-etcd.sh)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="etcdguard-bench-zstd-", dir="/var/tmp"))
    member = EtcdMember(build, work / "etcd")
    rows = []
    try:
        member.launch()
        present = 0
        for n, size in enumerate(sizes):
            fill_member(member, size * MB - present, seed=100 + n, values=args.values)
            present = size * MB
            snap = work / "snap.db"
            member.etcdctl("snapshot", "save", str(snap), timeout=1800)
            print(f"{size} MB of {args.values} values: snapshot {snap.stat().st_size / MB:.1f} MB", file=sys.stderr)
            for r in measure(snap, levels, args.repeat, work):
                rows.append({"size_mb": size, "values": args.values, "etcd": build.version, **r})
            snap.unlink()
    finally:
        member.stop(kill=True)
        shutil.rmtree(work, ignore_errors=True)
    name = args.name or ("compression" if args.values == "random" else "compression-objects")
    save(name, {"rows": rows, "frame_bytes": FRAME, "threads": 1,
                "note": "one independent frame per 1 MiB chunk, one thread each way; read back = decompress "
                        "across frames + sha256"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
