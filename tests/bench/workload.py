"""The benchmarks' workload: a cluster filled to a chosen size with Kubernetes-like keys.

Keys are ``/registry/<resource>/<namespace>/<name>`` (``/registry/<resource>/<name>`` for the
cluster-scoped resources), as the kube-apiserver writes them; values are 1-100 KB, cut from a pool of
random bytes (the default: incompressible, the worst case for compression) or, with
``values="objects"``, from Kubernetes-like JSON objects (as compressible as real API objects). Everything is
drawn from one seed, so the same arguments give the same keys and values on every run and machine.

Fast: values are slices of one seeded random pool (no per-value generation), requests are encoded
by hand (agent/etcd/pbwire.py) and sent as transactions of about 1 MB over raw gRPC from several
threads, one channel each. 300 MB loads in a few seconds on 2 cores.

    python tests/bench/workload.py --endpoint http://127.0.0.1:2379 --size-mb 300
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from etcdguard.common.etcd import pbwire  # noqa: E402

MB = 1_000_000
DEFAULT_SIZE_MB = 300
VALUE_SIZE = (1_000, 100_000)       # bytes, uniform
TXN_BYTES = 1_000_000               # about 1 MB of values per transaction (one revision each)
TXN_OPS = 64                        # etcd's --max-txn-ops defaults to 128
POOL_BYTES = 8 << 20                # values are windows into this seeded pool
THREADS = 6

# (resource, namespaced, weight): roughly what a busy cluster holds, by count
RESOURCES: tuple[tuple[str, bool, int], ...] = (
    ("pods", True, 30), ("events", True, 20), ("configmaps", True, 12), ("secrets", True, 12),
    ("replicasets", True, 8), ("deployments", True, 5), ("services/specs", True, 4),
    ("serviceaccounts", True, 3), ("leases", True, 2), ("endpointslices", True, 2),
    ("nodes", False, 1), ("clusterroles", False, 1),
)
NAMESPACES = 40


@dataclass(frozen=True)
class Item:
    key: bytes
    offset: int     # the value is pool[offset:offset + size]
    size: int


def plan(total_bytes: int, seed: int = 0, value_size: tuple[int, int] = VALUE_SIZE) -> list[Item]:
    """The keys and value sizes, adding up to at least ``total_bytes`` of values (pure, seeded)."""
    lo, hi = value_size
    rng = random.Random(seed)
    names = [r for r, _, _ in RESOURCES]
    weights = [w for _, _, w in RESOURCES]
    scoped = {r: ns for r, ns, _ in RESOURCES}
    items: list[Item] = []
    total = 0
    counters: dict[str, int] = {}
    while total < total_bytes:
        resource = rng.choices(names, weights)[0]
        n = counters[resource] = counters.get(resource, 0) + 1
        name = f"{resource.split('/')[0].rstrip('s')}-{n:06d}-{rng.getrandbits(20):05x}"
        if scoped[resource]:
            key = f"/registry/{resource}/ns-{rng.randrange(NAMESPACES):03d}/{name}"
        else:
            key = f"/registry/{resource}/{name}"
        size = rng.randint(lo, hi)
        items.append(Item(key.encode(), rng.randrange(POOL_BYTES - size), size))
        total += size
    return items


VALUES = ("random", "objects")


def pool(seed: int = 0, values: str = "random") -> bytes:
    """The bytes values are cut from: random (incompressible: the worst case for compression), or
    ``objects``: Kubernetes-like JSON objects (pods with labels, images, env, status), as compressible as
    the text of real API objects."""
    if values == "objects":
        return object_pool(seed)
    return random.Random(seed ^ 0x5EED).randbytes(POOL_BYTES)


def object_pool(seed: int = 0) -> bytes:
    import json

    rng = random.Random(seed ^ 0x0B1EC7)
    out = bytearray()
    i = 0
    while len(out) < POOL_BYTES:
        i += 1
        app = f"app-{rng.randrange(200)}"
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"{app}-{rng.getrandbits(40):010x}", "namespace": f"ns-{rng.randrange(NAMESPACES):03d}",
            "uid": f"{rng.getrandbits(128):032x}", "resourceVersion": str(rng.randrange(10**8)),
            "labels": {"app": app, "pod-template-hash": f"{rng.getrandbits(40):010x}"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": f"2026-{rng.randrange(1, 13):02d}-01T00:00:00Z"}},
            "spec": {"containers": [{"name": app, "image": f"registry.example/{app}:v{rng.randrange(50)}",
                                     "env": [{"name": f"VAR_{j}", "value": f"{rng.getrandbits(64):016x}"}
                                             for j in range(rng.randrange(12))],
                                     "resources": {"requests": {"cpu": f"{rng.randrange(1, 2000)}m",
                                                                "memory": f"{rng.randrange(1, 4096)}Mi"}}}],
                     "nodeName": f"node-{rng.randrange(100)}", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{i % 256}",
                       "conditions": [{"type": t, "status": "True"} for t in ("Ready", "Initialized")]}}
        out += json.dumps(obj).encode()
    return bytes(out[:POOL_BYTES])


def batches(items: Sequence[Item], txn_bytes: int = TXN_BYTES, txn_ops: int = TXN_OPS) -> Iterator[list[Item]]:
    current: list[Item] = []
    size = 0
    for item in items:
        if current and (size + item.size > txn_bytes or len(current) >= txn_ops):
            yield current
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        yield current


@dataclass(frozen=True)
class Loaded:
    keys: int
    value_bytes: int
    seconds: float
    revision: int


def _channel(endpoint: str, tls: Optional[Any]) -> Any:
    import grpc
    from etcdguard.common.etcd.client import client_address

    address = client_address(endpoint)
    target = f"{address.bracketed_host}:{address.port}"
    options = [("grpc.enable_http_proxy", 0), ("grpc.max_send_message_length", 16 << 20)]
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(Path(tls.ca_cert).read_bytes(), Path(tls.client_key).read_bytes(),
                                         Path(tls.client_cert).read_bytes())
    return grpc.secure_channel(target, creds, options=options)


def fill(endpoints: Sequence[str], size_bytes: int = DEFAULT_SIZE_MB * MB, *, seed: int = 0, tls: Optional[Any] = None,
         threads: int = THREADS, value_size: tuple[int, int] = VALUE_SIZE, values: str = "random") -> Loaded:
    """Write the seeded workload of ``size_bytes`` of values through ``endpoints`` (spread over the threads)."""
    started = time.perf_counter()
    items = plan(size_bytes, seed, value_size)
    data = memoryview(pool(seed, values))
    work = list(batches(items))
    local = threading.local()
    channels: list[Any] = []
    lock = threading.Lock()
    counter = iter(range(1 << 30))

    def call() -> Any:
        c = getattr(local, "call", None)
        if c is None:
            with lock:
                ch = _channel(endpoints[next(counter) % len(endpoints)], tls)
                channels.append(ch)
            c = local.call = ch.unary_unary("/etcdserverpb.KV/Txn", request_serializer=None,
                                            response_deserializer=pbwire.parse_header_of)
        return c

    def write(batch: list[Item]) -> int:
        request = pbwire.txn_puts_request([(i.key, data[i.offset:i.offset + i.size]) for i in batch])
        header = call()(request, timeout=60)
        return int(header.revision)

    revision = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
            for rev in ex.map(write, work):
                revision = max(revision, rev)
    finally:
        for ch in channels:
            ch.close()
    return Loaded(len(items), sum(i.size for i in items), time.perf_counter() - started, revision)


def fill_member(member: Any, size_bytes: int, **kwargs: Any) -> Loaded:
    """fill() through one harness member (tests/helpers/etcd.py EtcdMember)."""
    return fill([member.client_url], size_bytes, tls=member.tls, **kwargs)


def fill_cluster(cluster: Any, size_bytes: int, **kwargs: Any) -> Loaded:
    """fill() through every member of a harness cluster (EtcdCluster)."""
    return fill([m.client_url for m in cluster.members], size_bytes, tls=cluster.tls, **kwargs)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", action="append", required=True, help="etcd client URL (repeatable)")
    ap.add_argument("--size-mb", type=int, default=DEFAULT_SIZE_MB)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--values", choices=VALUES, default="random", help="random bytes (default) or Kubernetes-like "
                    "objects")
    args = ap.parse_args(argv)
    r = fill(args.endpoint, args.size_mb * MB, seed=args.seed, values=args.values)
    print(f"{r.keys} keys, {r.value_bytes / MB:.0f} MB of values in {r.seconds:.1f}s "
          f"({r.value_bytes / MB / r.seconds:.0f} MB/s), revision {r.revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
