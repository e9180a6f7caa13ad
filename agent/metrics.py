"""Prometheus metrics of the agent, on a private registry with a stoppable HTTP server.

`etcdguard_backup_age_seconds` is computed at scrape time, so a wedged daemon
shows a growing age instead of a frozen one; it grows on the monotonic clock
from the newest snapshot's age when it became the newest (base/freshness.py),
so a stepped clock can neither make it negative nor hold it at 0.
`etcdguard_snapshots_future_dated` counts the snapshots stamped in the future.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from etcdguard.agent import __version__
from etcdguard.agent.base.addresses import format_host_port, is_ipv6_literal, parse_host_port
from etcdguard.agent.base.errors import ConfigError
from etcdguard.agent.base.freshness import Freshness, future_dated
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FAILURE_REASONS = ("etcd_unavailable", "corrupt", "tool", "disk", "aborted", "timeout", "other")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))


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

    def record_store(self, stamps: Sequence[float]) -> None:
        """Every snapshot's stamp, for ``etcdguard_snapshots_future_dated``."""
        self._stamps = tuple(stamps)

    def record_failure(self, reason: str) -> None:
        self.failures.labels(reason=reason if reason in FAILURE_REASONS else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HTTPServer6(ThreadingHTTPServer):
    """http.server binds AF_INET unless told otherwise; an IPv6 listen address needs AF_INET6."""

    address_family = socket.AF_INET6


class MetricsServer:
    """Serves /metrics from a registry; start() and stop() are idempotent."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        address = parse_host_port(listen)  # as [metrics] listen was validated
        self.registry = registry
        self.host = address.host
        self.port = address.port
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """Where the metrics are served (an IPv6 host in brackets), for logs."""
        return f"http://{format_host_port(self.host, self.port)}/metrics"

    def start(self) -> None:
        """Bind and serve; a port that cannot be bound (in use, privileged, no such address) is a ConfigError."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        server_class = _HTTPServer6 if is_ipv6_literal(self.host) else ThreadingHTTPServer
        try:
            self._server = server_class((self.host, self.port), Handler)
        except OSError as exc:
            raise ConfigError(f"metrics.listen {format_host_port(self.host, self.port)}: cannot listen: "
                              f"{exc.strerror or exc}; is another agent or exporter running there? "
                              "Change [metrics] listen or stop it") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def bind_replacement(registry: CollectorRegistry, listen: str, old: Optional[MetricsServer]) -> MetricsServer:
    """A started metrics server on ``listen``, to replace ``old`` on a reload (ConfigError if it cannot bind).

    It is bound while ``old`` still serves, so a taken port leaves ``old`` serving. When the new address
    can only be bound once ``old`` lets go (the same port written another way), ``old`` is stopped first
    and started again if the new one still fails. The caller stops ``old`` afterwards (stop is idempotent).
    """
    new = MetricsServer(registry, listen)
    try:
        new.start()
        return new
    except ConfigError:
        if old is None or old.port != new.port:
            raise
    old.stop()
    try:
        new.start()
    except ConfigError:
        old.start()
        raise
    return new
