"""Snapshot fetch over CURVE versus `cp` of the same file on the same disk.

Loads about ``--size-mb`` MB into a fresh etcd member, has a real agent take
a snapshot, then measures in the same run, interleaved for ``--rounds``
rounds: (a) `cp` of the snapshot file plus `sync` of the copy, and (b)
AgentClient.fetch_snapshot of it over CURVE into another directory (temp
file, sha256 + trailer check, fsync, rename). Reports both throughputs, the
ratio fetch/cp (medians), and the agent's RSS while it serves the transfer.
For context it also measures the bare ZeroMQ pipe between two processes
(same security, credit and chunk size; no file, no hashing): no fetch can
beat it on the same machine.

    python tests/bench/bench_transfer.py --size-mb 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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

import zmq  # noqa: E402
from etcdguard.common.wire.protocol import RemoteError  # noqa: E402

from tests.bench.workload import fill_member  # noqa: E402
from tests.helpers.agents import AgentProcess, CoordinatorKeys  # noqa: E402
from tests.helpers.etcd import EtcdMember, build_for  # noqa: E402

MB = 1_000_000


def drop_dirty() -> None:
    """Flush every dirty page first, so one measurement does not pay for the previous one's writes."""
    subprocess.run(["sync"], check=True)


def warm(path: Path) -> None:
    """Read the file once, so both measurements start with it in the page cache (this VM's memory
    manager reclaims idle cache within seconds)."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(4 << 20)
        while fh.readinto(buf):
            pass


def time_cp(src: Path, dest: Path) -> float:
    drop_dirty()
    warm(src)
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sync", str(dest)], check=True)
    return time.perf_counter() - started


class PeakRss:
    """The agent's peak RSS over a block: VmHWM reset before it (/proc/PID/clear_refs) and read after.

    Exact and free of side effects on the transfer; where the reset is not allowed, a slow sampling
    thread (every 50 ms) stands in.
    """

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.peak_kb = 0
        self.method = "VmHWM after clear_refs"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kb = max(self.peak_kb, self.agent.rss_kb() or 0)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.agent.pid}/clear_refs").write_text("5")
        except OSError:
            self.method = "VmRSS sampled every 50 ms"
            self.peak_kb = self.agent.rss_kb() or 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_kb = max(self.peak_kb, self.agent.rss_kb() or 0)
        else:
            self.peak_kb = self.agent.rss_kb("VmHWM") or 0


def _ceiling_server(endpoint: str, secret: Optional[bytes], public: Optional[bytes], chunk: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    if secret is not None:
        sock.curve_server = True
        sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.bind(endpoint)
    payload = os.urandom(chunk)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"stop":
            break
        sock.send_multipart([frames[0], b"{}", payload], copy=False)
    sock.close(0)
    ctx.term()


def zmq_ceiling(total: int, chunk: int, credit: int, curve: bool) -> float:
    """MB/s of the bare ZeroMQ pipe between two processes, same credit and chunk, nothing else done."""
    import multiprocessing

    from tests.helpers.net import free_port

    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = multiprocessing.get_context("spawn").Process(
        target=_ceiling_server, args=(endpoint, server_secret if curve else None, server_public, chunk))
    proc.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, client_public, client_secret
    sock.connect(endpoint)
    try:
        sock.send(b"warm-up")
        sock.recv_multipart()
        n = max(1, total // chunk)
        sent = received = 0
        started = time.perf_counter()
        while received < n:
            while sent - received < credit and sent < n:
                sock.send(b"chunk")
                sent += 1
            sock.recv_multipart(copy=False)
            received += 1
        elapsed = time.perf_counter() - started
        sock.send(b"stop")
    finally:
        proc.join(30)
        sock.close(0)
        ctx.term()
    return n * chunk / elapsed / MB


def take_snapshot(client: Any) -> dict[str, Any]:
    """snapshot.take; if the daemon's own start-up snapshot holds the slot, wait for it and use that."""
    deadline = time.monotonic() + 600
    while True:
        try:
            snap: dict[str, Any] = client.call("snapshot.take", timeout=600)["snapshot"]
            return snap
        except RemoteError as exc:
            if exc.code != "busy" or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300, help="MB of values to load into etcd (default 300)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved cp/fetch rounds (default 3)")
    ap.add_argument("--chunk", type=int, default=1 << 20, help="fetch chunk size in bytes (default 1 MiB)")
    ap.add_argument("--credit", type=int, default=4, help="chunks in flight (default 4)")
    ap.add_argument("--etcd", choices=("3.4", "3.5"), default="3.5", help="etcd build (default 3.5, else 3.4)")
    ap.add_argument("--insecure", action="store_true", help="plain TCP instead of CURVE (for comparison)")
    ap.add_argument("--zstd-level", type=int, default=1,
                    help="also fetch compressed at this zstd level, as the vault pulls (default 1; 0: only plain)")
    ap.add_argument("--values", choices=("random", "objects"), default="random",
                    help="the workload's values: random bytes (default) or Kubernetes-like objects (compressible)")
    ap.add_argument("--workdir", type=Path, help="where etcd, the agent and the copies live (default: a temp dir)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the results here as JSON")
    args = ap.parse_args(argv)

    build = build_for(args.etcd) or build_for("3.4")
    if build is None:
        print("no etcd build found (bash scripts/install-etcd.sh)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-", dir=args.workdir))
    member = EtcdMember(build, base / "etcd")
    agent: Optional[AgentProcess] = None
    try:
        member.launch()
        started = time.perf_counter()
        keys_loaded = fill_member(member, args.size_mb * MB, values=args.values).keys
        load_s = time.perf_counter() - started
        print(f"loaded {keys_loaded} keys ({args.size_mb} MB) into etcd {build.version} in {load_s:.1f}s",
              file=sys.stderr)
        coordinator = None if args.insecure else CoordinatorKeys.create(base / "coordinator")
        agent = AgentProcess(member, base / "agent", authorized=[coordinator.public_path] if coordinator else (),
                             insecure=args.insecure, seed=False)
        agent.start()
        client = agent.client(coordinator)
        started = time.perf_counter()
        snap = take_snapshot(client)
        take_s = time.perf_counter() - started
        src, size = Path(snap["path"]), int(snap["size"])
        print(f"agent took {snap['name']}: {size / MB:.1f} MB in {take_s:.1f}s", file=sys.stderr)
        rss_before = agent.rss_kb() or 0

        cp_dir, fetch_dir = base / "cp", base / "fetched"
        cp_dir.mkdir()
        fetch_dir.mkdir()
        cp_times: list[float] = []
        fetch_times: list[float] = []
        zstd_times: list[float] = []
        zstd_bytes = 0
        rss_peaks: list[int] = []
        for i in range(args.rounds):
            dest = cp_dir / f"copy{i}.db"
            cp_times.append(time_cp(src, dest))
            dest.unlink()
            dest = fetch_dir / f"fetch{i}.db"
            drop_dirty()
            warm(src)
            with PeakRss(agent) as sampler:
                t0 = time.perf_counter()
                client.fetch_snapshot(snap["name"], dest, expected_sha256=snap["sha256"], expected_size=size,
                                      chunk=args.chunk, credit=args.credit, timeout=60)
                fetch_times.append(time.perf_counter() - t0)
            rss_peaks.append(sampler.peak_kb)
            dest.unlink()
            zstd = ""
            if args.zstd_level:
                drop_dirty()
                warm(src)
                t0 = time.perf_counter()
                client.fetch_snapshot(snap["name"], dest, expected_sha256=snap["sha256"], expected_size=size,
                                      chunk=args.chunk, credit=args.credit, timeout=60, zstd_level=args.zstd_level)
                zstd_times.append(time.perf_counter() - t0)
                zstd_bytes = dest.stat().st_size
                dest.unlink()
                zstd = f", zstd fetch {size / zstd_times[-1] / MB:.0f} MB/s of snapshot ({zstd_bytes / MB:.1f} MB sent)"
            print(f"round {i + 1}: cp+sync {size / cp_times[-1] / MB:.0f} MB/s, "
                  f"fetch {size / fetch_times[-1] / MB:.0f} MB/s{zstd}, agent RSS peak "
                  f"{sampler.peak_kb / 1024:.1f} MiB", file=sys.stderr)
        client.close()
        ceilings = [zmq_ceiling(size, args.chunk, args.credit, not args.insecure) for _ in range(args.rounds)]
        ceiling = statistics.median(ceilings)
        print(f"bare ZeroMQ {'plain TCP' if args.insecure else 'CURVE'} pipe, same credit and chunk: "
              f"{ceiling:.0f} MB/s", file=sys.stderr)
        cp_med, fetch_med = statistics.median(cp_times), statistics.median(fetch_times)
        result = {
            "size_bytes": size,
            "snapshot_take_seconds": round(take_s, 3),
            "cp_seconds": [round(t, 3) for t in cp_times],
            "fetch_seconds": [round(t, 3) for t in fetch_times],
            "cp_mb_per_s": round(size / cp_med / MB, 1),
            "fetch_mb_per_s": round(size / fetch_med / MB, 1),
            "ratio_fetch_to_cp": round(cp_med / fetch_med, 3),
            "zmq_pipe_mb_per_s": round(ceiling, 1),
            "ratio_zmq_pipe_to_cp": round(ceiling / (size / cp_med / MB), 3),
            "ratio_fetch_to_zmq_pipe": round(size / fetch_med / MB / ceiling, 3),
            "values": args.values,
            "zstd_level": args.zstd_level or None,
            "zstd_fetch_seconds": [round(t, 3) for t in zstd_times],
            "zstd_fetch_mb_per_s": round(size / statistics.median(zstd_times) / MB, 1) if zstd_times else None,
            "ratio_zstd_fetch_to_cp": round(cp_med / statistics.median(zstd_times), 3) if zstd_times else None,
            "zstd_bytes": zstd_bytes or None,
            "zstd_ratio": round(size / zstd_bytes, 3) if zstd_bytes else None,
            "agent_rss_before_kb": rss_before,
            "agent_rss_peak_during_fetch_kb": max(rss_peaks),
            "agent_rss_method": sampler.method,
            "chunk": args.chunk,
            "credit": args.credit,
            "curve": not args.insecure,
            "etcd_version": build.version,
            "python": platform.python_version(),
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        if agent is not None:
            agent.stop()
        member.stop(kill=True)
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    sys.exit(main())
