"""Prometheus metrics of the coordinator: the vault's freshness, the agents' reachability, restore drills.

They mirror the agent's ``etcdguard_backup_*`` metrics with an
``etcdguard_vault_`` prefix, and each carries a ``backend`` label (``dir`` or
``s3``) so a dashboard tells an on-host vault from an off-site one. Ages are
computed at scrape time, so a wedged daemon shows a growing age instead of a
frozen one. Served by the agent's MetricsServer.

The attributes (``interval``, ``duration``, ...) are the children for the
configured backend; ``set_backend`` moves them when a reload changes it.
"""

from __future__ import annotations

import builtins
import time
from typing import Any, Callable, Optional

from etcdguard.common import __version__
from etcdguard.common.base.freshness import Freshness, future_dated
from etcdguard.coordinator.drill.checks import REASONS as DRILL_REASONS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# unreachable: no agent answered; no_snapshot: no healthy member had a snapshot; busy: the
# member was taking a snapshot for too long; checksum: the transfer did not match the sha256
# or the etcd trailer; transfer: the agent stopped answering mid-transfer or refused the
# fetch; disk: the vault could not be written; backend: the vault's storage failed (by op and
# reason in etcdguard_vault_backend_failures_total); other: anything else (in the log).
FAILURE_REASONS = ("unreachable", "no_snapshot", "busy", "checksum", "transfer", "disk", "backend", "other")
BACKEND_OPS = ("upload", "download", "list", "delete")
BACKEND_REASONS = ("credentials", "denied", "no_bucket", "unreachable", "checksum", "decrypt", "disk", "other")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
DRILL_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))


class CoordinatorMetrics:
    last_success: Gauge
    age: Gauge
    last_size: Gauge
    last_revision: Gauge
    duration: Histogram
    retained: Gauge
    bytes: Gauge
    stored_bytes: Gauge
    members: Gauge
    members_reachable: Gauge
    interval: Gauge
    offsite_last_success: Gauge
    offsite_age: Gauge
    future_dated: Gauge

    def __init__(self, registry: Optional[CollectorRegistry] = None, backend: str = "dir") -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "etcdguard_vault"
        b = ["backend"]
        self.freshness = Freshness()
        self._stamps: tuple[float, ...] = ()
        self.offsite_source: Callable[[], Optional[float]] = lambda: None
        self._families: dict[str, Any] = {
            "last_success": Gauge(f"{p}_last_success_timestamp_seconds",
                                  "Unix time of the newest data in the vault (0: none yet)", b, registry=r),
            "age": Gauge(f"{p}_age_seconds", "Seconds since the newest data in the vault (+Inf: none)", b,
                         registry=r),
            "last_size": Gauge(f"{p}_last_size_bytes", "Size of the newest snapshot in the vault", b, registry=r),
            "last_revision": Gauge(f"{p}_last_revision", "etcd revision of the newest snapshot in the vault", b,
                                   registry=r),
            "duration": Histogram(f"{p}_pull_duration_seconds", "Time to copy one snapshot into the vault", b,
                                  buckets=DURATION_BUCKETS, registry=r),
            "retained": Gauge(f"{p}_snapshots_retained", "Snapshots kept in the vault", b, registry=r),
            "bytes": Gauge(f"{p}_bytes", "Bytes of snapshots in the vault (before encryption)", b, registry=r),
            "stored_bytes": Gauge(f"{p}_stored_bytes",
                                  "Bytes the vault's storage holds for its snapshots (compressed, encrypted)", b,
                                  registry=r),
            "members": Gauge(f"{p}_members", "Members in the configuration", b, registry=r),
            "members_reachable": Gauge(f"{p}_members_reachable",
                                       "Agents the coordinator reached at its last attempt", b, registry=r),
            "interval": Gauge(f"{p}_interval_seconds", "Configured vault interval", b, registry=r),
            "offsite_last_success": Gauge(
                f"{p}_offsite_last_success_timestamp_seconds",
                "Unix time the vault's backend last confirmed holding its copies (an upload or a listing)", b,
                registry=r),
            "offsite_age": Gauge(f"{p}_offsite_age_seconds",
                                 "Seconds since the backend last confirmed the vault's copies (+Inf: never)", b,
                                 registry=r),
            "future_dated": Gauge(f"{p}_snapshots_future_dated",
                                  "Vault snapshots stamped in the future by the coordinator's clock", b, registry=r),
        }
        self._failures = Counter(f"{p}_failures_total", "Vault copies that failed, by reason", ["backend", "reason"],
                                 registry=r)
        self._backend_failures = Counter(f"{p}_backend_failures_total",
                                         "Failed operations on the vault's storage, by operation and reason",
                                         ["backend", "op", "reason"], registry=r)
        # the cluster restore (the agent's restore metrics carry the same names for node-local restores)
        self.restore_in_progress = Gauge("etcdguard_restore_in_progress", "1 while a cluster restore runs",
                                         registry=r)
        self.restore_last_result = Gauge("etcdguard_restore_last_result",
                                         "Last cluster restore: 1 success, 0 failure, -1 none yet", registry=r)
        self.restore_last_result.set(-1)
        self.restore_interrupted = Gauge("etcdguard_restore_interrupted",
                                         "Cluster restores that are interrupted, paused or need attention",
                                         registry=r)
        self.restore_damaged = Gauge("etcdguard_restore_journals_damaged",
                                     "Cluster restore journals that cannot be read; new restores are refused",
                                     registry=r)
        self.restore_phase_duration = Gauge("etcdguard_restore_phase_duration_seconds",
                                            "Duration of each phase of the last cluster restore", ["phase"],
                                            registry=r)
        self.restore_downtime = Gauge("etcdguard_restore_downtime_seconds",
                                      "Downtime (fence to unfence) of the last cluster restore", registry=r)
        self.prestaged = Gauge(f"{p}_prestaged", "1 when the member holds the vault's newest snapshot ahead of "
                               "any restore (pre-staged or in its own store), 0 when it does not yet", ["member"],
                               registry=r)
        # continuous backup (coordinator/continuous/): read at scrape time from the capture
        self.continuous_enabled = Gauge("etcdguard_continuous_enabled",
                                        "1 when continuous backup is configured on ([continuous] enabled)",
                                        registry=r)
        self.continuous_running = Gauge("etcdguard_continuous_running",
                                        "1 while an agent's capture answers the coordinator's reads", registry=r)
        self.continuous_lag = Gauge("etcdguard_continuous_lag_seconds",
                                    "Seconds since the vault last held every change etcd had made", registry=r)
        self.continuous_last_revision = Gauge("etcdguard_continuous_last_revision",
                                              "The newest etcd revision the vault's segments hold", registry=r)
        self.continuous_gaps = Counter("etcdguard_continuous_gaps_total",
                                       "Gaps recorded: revisions etcd compacted before the capture read them",
                                       registry=r)
        self.continuous_segment_bytes = Gauge("etcdguard_continuous_segment_bytes",
                                              "Bytes of continuous backup segments in the vault (as stored)",
                                              registry=r)
        self.continuous_last_gap = Gauge("etcdguard_continuous_last_gap_timestamp_seconds",
                                         "Unix time the newest gap the vault holds was found (0: none)", registry=r)
        self.continuous_segments = Gauge("etcdguard_continuous_segments",
                                         "Continuous backup segments in the vault (gaps included)", registry=r)
        self._drills(r)
        self.build_info = Gauge("etcdguard_build_info", "etcdguard version", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        self.backend = ""
        self.set_backend(backend)

    def _drills(self, r: CollectorRegistry) -> None:
        """Restore drills (coordinator/drill/): when one last proved a snapshot restorable, how long they take,
        and why they fail."""
        self._drill_success: Optional[float] = None
        self.drill_last_success = Gauge("etcdguard_drill_last_success_timestamp_seconds",
                                        "Unix time the last restore drill that passed started (0: none yet)",
                                        registry=r)
        self.drill_age = Gauge("etcdguard_drill_age_seconds",
                               "Seconds since the last restore drill that passed started (+Inf: none)", registry=r)
        self.drill_age.set_function(self._drill_age)
        self.drill_duration = Histogram("etcdguard_drill_duration_seconds", "Time one restore drill took",
                                        buckets=DRILL_BUCKETS, registry=r)
        self.drill_failures = Counter("etcdguard_drill_failures_total", "Restore drills that failed, by reason",
                                      ["reason"], registry=r)
        for reason in DRILL_REASONS:
            self.drill_failures.labels(reason=reason)
        self.drill_last_result = Gauge("etcdguard_drill_last_result",
                                       "Last restore drill: 1 passed, 0 failed, -1 none yet", registry=r)
        self.drill_last_result.set(-1)
        self.drill_interval = Gauge("etcdguard_drill_interval_seconds",
                                    "Configured restore drill interval (0: no scheduled drills)", registry=r)
        self.drill_enabled = Gauge("etcdguard_drill_enabled",
                                   "1 when scheduled restore drills are on (whether or not they can run here)",
                                   registry=r)

    def _drill_age(self) -> float:
        last = self._drill_success
        return float("inf") if last is None else max(0.0, time.time() - last)

    def record_drill_state(self, last_success: Optional[float], last_ok: Optional[bool]) -> None:
        """What the drills' records say (at start): the last success, and how the last drill ended."""
        self._drill_success = last_success
        self.drill_last_success.set(last_success or 0)
        self.drill_last_result.set(-1 if last_ok is None else (1 if last_ok else 0))

    def record_drill(self, ok: bool, reason: str, seconds: float, last_success: Optional[float]) -> None:
        """One drill ended."""
        self.drill_duration.observe(seconds)
        if not ok:
            self.drill_failures.labels(reason=reason if reason in DRILL_REASONS else "other").inc()
        self.record_drill_state(last_success, ok)

    def set_backend(self, backend: str) -> None:
        """Bind the attributes to ``backend``'s series (dropping the old backend's)."""
        if backend == self.backend:
            return
        old = self.backend
        for name, family in self._families.items():
            if old:
                family.remove(old)
            setattr(self, name, family.labels(backend=backend))
        if old:
            for reason in FAILURE_REASONS:
                self._failures.remove(old, reason)
            for op in BACKEND_OPS:
                for reason in BACKEND_REASONS:
                    self._backend_failures.remove(old, op, reason)
        self.backend = backend
        for reason in FAILURE_REASONS:
            self._failures.labels(backend=backend, reason=reason)
        for op in BACKEND_OPS:
            for reason in BACKEND_REASONS:
                self._backend_failures.labels(backend=backend, op=op, reason=reason)
        self.age.set_function(self.freshness.age)
        self.future_dated.set_function(lambda: future_dated(self._stamps, time.time()))
        self.offsite_age.set_function(self._offsite_age)
        self.offsite_last_success.set_function(lambda: self.offsite_source() or 0.0)

    def _offsite_age(self) -> float:
        seen = self.offsite_source()
        return float("inf") if seen is None else max(0.0, time.time() - seen)

    def record_newest(self, when: Optional[float], size: int, revision: int) -> None:
        """The vault's newest data (by revision) and when it was taken: drives age, size and revision.

        The age is anchored when the newest changes and grows on the monotonic clock (base/freshness.py).
        """
        if when is None:
            self.freshness.clear()
        else:
            self.freshness.record((when, revision), when)
        self.last_success.set(when or 0)
        self.last_size.set(size)
        self.last_revision.set(revision)

    def record_vault(self, stamps: builtins.list[float]) -> None:
        """Every vault entry's stamp, for ``etcdguard_vault_snapshots_future_dated``."""
        self._stamps = tuple(stamps)

    def record_failure(self, reason: str) -> None:
        self._failures.labels(backend=self.backend, reason=reason if reason in FAILURE_REASONS else "other").inc()

    def record_backend_failure(self, op: str, reason: str) -> None:
        self._backend_failures.labels(backend=self.backend, op=op if op in BACKEND_OPS else "upload",
                                      reason=reason if reason in BACKEND_REASONS else "other").inc()

    def render(self) -> builtins.bytes:
        return generate_latest(self.registry)

