"""Prometheus metrics of the coordinator: the vault's freshness and the agents' reachability.

They mirror the agent's ``etcdguard_backup_*`` metrics with an
``etcdguard_vault_`` prefix. The age is computed at scrape time from the
newest entry, so a wedged daemon shows a growing age instead of a frozen one.
Served by the agent's MetricsServer.
"""

from __future__ import annotations

import time
from typing import Optional

from etcdguard.agent import __version__
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# unreachable: no agent answered; no_snapshot: no healthy member had a snapshot; busy: the
# member was taking a snapshot for too long; checksum: the transfer did not match the sha256
# or the etcd trailer; transfer: the agent stopped answering mid-transfer or refused the
# fetch; disk: the vault could not be written; other: anything else (in the log).
FAILURE_REASONS = ("unreachable", "no_snapshot", "busy", "checksum", "transfer", "disk", "other")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


class CoordinatorMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "etcdguard_vault"
        self._last_success: Optional[float] = None
        self.last_success = Gauge(f"{p}_last_success_timestamp_seconds",
                                  "Unix time of the newest snapshot in the vault (0: none yet)", registry=r)
        self.age = Gauge(f"{p}_age_seconds", "Seconds since the newest snapshot in the vault (+Inf: none)",
                         registry=r)
        self.age.set_function(self._age)
        self.last_size = Gauge(f"{p}_last_size_bytes", "Size of the newest snapshot in the vault", registry=r)
        self.last_revision = Gauge(f"{p}_last_revision", "etcd revision of the newest snapshot in the vault",
                                   registry=r)
        self.duration = Histogram(f"{p}_pull_duration_seconds", "Time to copy one snapshot into the vault",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.failures = Counter(f"{p}_failures_total", "Vault copies that failed, by reason", ["reason"],
                                registry=r)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason)
        self.retained = Gauge(f"{p}_snapshots_retained", "Snapshots kept in the vault", registry=r)
        self.bytes = Gauge(f"{p}_bytes", "Bytes used by the vault", registry=r)
        self.members = Gauge(f"{p}_members", "Members in the configuration", registry=r)
        self.members_reachable = Gauge(f"{p}_members_reachable",
                                       "Agents the coordinator reached at its last attempt", registry=r)
        self.interval = Gauge(f"{p}_interval_seconds", "Configured vault interval", registry=r)
        # the cluster restore (the agent's restore metrics carry the same names for node-local restores)
        self.restore_in_progress = Gauge("etcdguard_restore_in_progress", "1 while a cluster restore runs",
                                         registry=r)
        self.restore_last_result = Gauge("etcdguard_restore_last_result",
                                         "Last cluster restore: 1 success, 0 failure, -1 none yet", registry=r)
        self.restore_last_result.set(-1)
        self.restore_interrupted = Gauge("etcdguard_restore_interrupted",
                                         "Cluster restores that are interrupted, paused or need attention",
                                         registry=r)
        self.restore_phase_duration = Gauge("etcdguard_restore_phase_duration_seconds",
                                            "Duration of each phase of the last cluster restore", ["phase"],
                                            registry=r)
        self.restore_downtime = Gauge("etcdguard_restore_downtime_seconds",
                                      "Downtime (fence to unfence) of the last cluster restore", registry=r)
        self.build_info = Gauge("etcdguard_build_info", "etcdguard version", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)

    def _age(self) -> float:
        if self._last_success is None:
            return float("inf")
        return max(0.0, time.time() - self._last_success)

    def record_newest(self, when: Optional[float], size: int, revision: int) -> None:
        """The vault's newest entry (by when it was taken): drives age, size and revision."""
        self._last_success = when
        self.last_success.set(when or 0)
        self.last_size.set(size)
        self.last_revision.set(revision)

    def record_failure(self, reason: str) -> None:
        self.failures.labels(reason=reason if reason in FAILURE_REASONS else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
