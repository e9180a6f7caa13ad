"""Prometheus metrics of the agent, on a private registry with a stoppable HTTP server.

`etcdguard_backup_age_seconds` is computed at scrape time, so a wedged daemon
shows a growing age instead of a frozen one; it grows on the monotonic clock
from the newest snapshot's age when it became the newest (base/freshness.py),
so a stepped clock can neither make it negative nor hold it at 0.
`etcdguard_snapshots_future_dated` counts the snapshots stamped in the future.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Callable, Optional

from etcdguard.common import __version__
from etcdguard.common.base.freshness import Freshness, future_dated
from etcdguard.common.wire.report import CertificateInfo
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

FAILURE_REASONS = ("etcd_unavailable", "corrupt", "tool", "disk", "aborted", "timeout", "other")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class CertificateCollector(Collector):
    """``etcdguard_certificate_expiry_seconds{path, kind}``: seconds until each certificate expires (negative
    once it has), computed at scrape time; ``etcdguard_certificates_unreadable``: files that cannot be read."""

    def __init__(self, prefix: str, wall: Callable[[], float]) -> None:
        self.prefix = prefix
        self.wall = wall
        self.source: Callable[[], Sequence[CertificateInfo]] = lambda: ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        expiry = GaugeMetricFamily(f"{self.prefix}_certificate_expiry_seconds",
                                   "Seconds until the certificate expires (negative: expired), by file and use",
                                   labels=["path", "kind"])
        unreadable = GaugeMetricFamily(f"{self.prefix}_certificates_unreadable",
                                       "Configured certificate files that cannot be read or parsed")
        now, bad = self.wall(), 0
        for cert in self.source():
            if cert.not_after_unix is None:
                bad += 1
                continue
            for kind in cert.kinds:
                expiry.add_metric([cert.path, kind], round(cert.not_after_unix - now, 3))
        unreadable.add_metric([], bad)
        yield expiry
        yield unreadable


class AgentMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None, prefix: str = "etcdguard", *,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = prefix
        self._wall = wall
        self.freshness = Freshness(wall, mono)
        self._stamps: tuple[float, ...] = ()
        self.last_success = Gauge(
            f"{p}_backup_last_success_timestamp_seconds",
            "Unix time of the last verified snapshot (0: none yet)", registry=r)
        self.age = Gauge(f"{p}_backup_age_seconds",
                         "Seconds since the last verified snapshot (+Inf: none yet)", registry=r)
        self.age.set_function(self.freshness.age)
        self.future_dated = Gauge(
            f"{p}_snapshots_future_dated",
            "Snapshots in the local store stamped in the future (the clock was stepped back)", registry=r)
        self.future_dated.set_function(lambda: future_dated(self._stamps, self._wall()))
        self.last_size = Gauge(f"{p}_backup_last_size_bytes", "Size of the last verified snapshot", registry=r)
        self.duration = Histogram(f"{p}_backup_duration_seconds", "Time to take and verify a snapshot",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.failures = Counter(f"{p}_backup_failures_total", "Snapshots that failed, by reason",
                                ["reason"], registry=r)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason)
        self.last_revision = Gauge(f"{p}_backup_last_revision", "etcd revision of the last verified snapshot",
                                   registry=r)
        self.interval = Gauge(f"{p}_backup_interval_seconds", "Configured backup interval", registry=r)
        self.retained = Gauge(f"{p}_snapshots_retained", "Snapshots in the local store", registry=r)
        self.store_bytes = Gauge(f"{p}_snapshot_store_bytes", "Bytes used by the local store", registry=r)
        self.restore_in_progress = Gauge(f"{p}_restore_in_progress", "1 while a restore runs here", registry=r)
        self.restore_last_result = Gauge(
            f"{p}_restore_last_result", "Last restore here: 1 success, 0 failure, -1 none yet", registry=r)
        self.restore_last_result.set(-1)
        self.records_damaged = Gauge(
            f"{p}_restore_records_damaged",
            "Restore operation records here that cannot be read; backups and restores wait for an operator",
            registry=r)
        self.etcd_up = Gauge(f"{p}_etcd_up", "1 if the local etcd answered at the last attempt", registry=r)
        self.db_size = Gauge(f"{p}_etcd_db_size_bytes", "Size of the local member's database file (NaN: unknown)",
                             registry=r)
        self.db_size_in_use = Gauge(f"{p}_etcd_db_size_in_use_bytes",
                                    "Bytes of the local member's database in use; the rest is free space a "
                                    "defragmentation gives back (NaN: unknown)", registry=r)
        self.db_size.set(float("nan"))
        self.db_size_in_use.set(float("nan"))
        self.certificates = CertificateCollector(p, wall)
        r.register(self.certificates)
        self.build_info = Gauge(f"{p}_build_info", "etcdguard version", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)

    def record_success(self, when: float, size: int, revision: int, duration: Optional[float] = None,
                       name: Optional[str] = None) -> None:
        """The snapshot ``name`` (stamped ``when``) is the store's newest (by revision: the caller decides)."""
        if self.freshness.record(name or (revision, when), when):
            self.last_success.set(when)
            self.last_size.set(size)
            self.last_revision.set(revision)
        if duration is not None:
            self.duration.observe(duration)

    def record_db(self, size: Optional[int], in_use: Optional[int]) -> None:
        """The local member's database size and in-use size as etcd's status said (None: unknown)."""
        self.db_size.set(float("nan") if size is None else size)
        self.db_size_in_use.set(float("nan") if in_use is None else in_use)

    def record_store(self, stamps: Sequence[float]) -> None:
        """Every snapshot's stamp, for ``etcdguard_snapshots_future_dated``."""
        self._stamps = tuple(stamps)

    def record_failure(self, reason: str) -> None:
        self.failures.labels(reason=reason if reason in FAILURE_REASONS else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
