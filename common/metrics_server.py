"""The Prometheus endpoint both daemons serve: /metrics from a registry, IPv4 or IPv6.

prometheus-client's own ``start_http_server`` neither reports a port that cannot be
bound as a config error nor stops cleanly for a reload, so this small server wraps
http.server around ``generate_latest``.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from etcdguard.common.base.addresses import format_host_port, is_ipv6_literal, parse_host_port
from etcdguard.common.base.errors import ConfigError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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
