"""A periodic health probe of the local etcd, for ``etcdguard_etcd_up`` and the database's sizes.

Snapshots alone would refresh the gauge once per backup interval (an hour by
default), so an etcd that died would read as up until the next snapshot and
its alert would fire that much later. The probe asks etcd's status every
``interval`` seconds in its own thread, so a hung etcd never holds up the
daemon's loop or its watchdog.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from etcdguard.agent.discovery.member import LocalMember
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.etcd.client import EtcdClient, EtcdStatus

log = logging.getLogger(__name__)

INTERVAL = 15.0        # seconds between probes
MAX_TIMEOUT = 5.0      # seconds; a probe never waits longer for etcd than this


def probe(member: LocalMember, timeout: float) -> tuple[bool, str, Optional[EtcdStatus]]:
    """(up, why, its status): etcd answered a status call and reports itself healthy (no errors, a leader)."""
    try:
        with EtcdClient(member.endpoint, member.tls, timeout) as client:
            st = client.status()
    except EtcdguardError as exc:
        return False, str(exc), None
    return st.healthy, "healthy" if st.healthy else "; ".join(st.errors) or "not healthy", st


class HealthProbe:
    """Calls ``report(up)`` with a fresh answer every ``interval`` seconds until stopped.

    ``target`` returns the member to ask and the dial timeout (the daemon's
    current config, which a reload may change), or None while there is none.
    A change of state is logged once, not every probe.
    """

    def __init__(self, target: Callable[[], Optional[tuple[LocalMember, float]]], report: Callable[[bool], None],
                 interval: float = INTERVAL, status: Callable[[Optional[EtcdStatus]], None] = lambda st: None) -> None:
        self._target = target
        self._report = report
        self._status = status
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last: Optional[bool] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="etcd-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(MAX_TIMEOUT + 5.0)

    def check(self) -> Optional[bool]:
        """One probe now; None when there is no member to ask yet."""
        target = self._target()
        if target is None:
            return None
        member, dial_timeout = target
        up, why, st = probe(member, min(dial_timeout, MAX_TIMEOUT))
        self._report(up)
        self._status(st)
        if up != self._last:
            if not up:
                log.warning("etcd at %s is down: %s", member.endpoint, why)
            elif self._last is not None:
                log.info("etcd at %s is up again (%s)", member.endpoint, why)
            self._last = up
        return up

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:   # the thread's outermost level: logged; the next probe tries again
                log.exception("etcd health probe failed")
