"""Ports and polling for tests that run real servers on 127.0.0.1 (or ::1)."""

from __future__ import annotations

import errno
import os
import random
import socket
import threading
from typing import Callable, Optional, TypeVar

from etcdguard.common.base.polling import PollTimeout, poll_until

T = TypeVar("T")

_lock = threading.Lock()
_handed_out: set[int] = set()


def _worker_slot() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) without xdist.

    Workers are separate processes that cannot see each other's handed-out ports, so each
    takes only its own share of the ports: two workers never pick the same port.
    """
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(name[2:]) if name.startswith("gw") else 0
    except ValueError:
        return 0, 1
    return (index % count, count) if count > 1 else (0, 1)


def _mine(port: int) -> bool:
    # Linux hands out only odd ports for bind() to port 0, so the slot is taken from port // 2.
    index, count = _worker_slot()
    return (port // 2) % count == index


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel's pick for port 0).

    Never returns the same port twice in one test session, so two servers set up
    side by side cannot be given the same port before either binds it.
    """
    for _ in range(400):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if not _mine(port):
            continue
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no fresh free port after 400 tries")


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            low, high = (int(x) for x in fh.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def free_server_port(host: str = "127.0.0.1") -> int:
    """A free TCP port outside the kernel's ephemeral range, for servers that get restarted.

    While a server is stopped, the kernel may hand its port (if it is in the
    ephemeral range) to some outgoing connection as its local port, and the
    restart then fails with "address already in use". Ports below the
    ephemeral range are never picked for outgoing connections.
    """
    low, _high = _ephemeral_range()
    lo, hi = 10000, low - 1
    if hi - lo < 1000:  # unusual sysctl: fall back to the kernel's pick
        return free_port(host)
    rng = random.SystemRandom()
    for _ in range(800):
        port = rng.randint(lo, hi)
        if not _mine(port):
            continue
        with _lock:
            if port in _handed_out:
                continue
        if _bindable(port, host):
            with _lock:
                if port in _handed_out:
                    continue
                _handed_out.add(port)
            return port
    return free_port(host)


class WaitTimeout(AssertionError, TimeoutError):
    """A polled condition never came true: a test failure (AssertionError) and a timeout."""


def wait_until(
    predicate: Callable[[], Optional[T]],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Raises WaitTimeout (an AssertionError and a TimeoutError) naming ``what`` (and the last exception the predicate
    raised, if any) when ``timeout`` seconds pass first, so a test failure says
    what never happened instead of hanging or sleeping blindly. The loop is the
    agent's own (base/polling.poll_until).
    """
    last_exc: Optional[BaseException] = None

    def check() -> Optional[T]:
        nonlocal last_exc
        try:
            return predicate()
        except Exception as exc:  # noqa: BLE001 - the predicate may fail while the thing starts up
            last_exc = exc
            return None

    try:
        return poll_until(check, timeout, interval=interval, what=what)
    except PollTimeout:
        detail = f" (last error: {last_exc!r})" if last_exc is not None else ""
        raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}") from None
