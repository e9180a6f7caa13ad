"""The agent's one capture session: started, continued or restarted by the coordinator's reads.

The coordinator reads from the revision after the last one it holds; this
keeps one session whose watch can answer that, and starts a new one from
there when the old one cannot (a first read, a coordinator restart or a
failover that moved the position, a watch that ended). A session nobody
has read for ``idle`` seconds is stopped (the coordinator moved the capture
to another member, or stopped), so an abandoned watch holds no memory.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from etcdguard.agent.capture.session import BUFFER_LIMIT, CaptureSession, close_quietly
from etcdguard.common.etcd.client import EtcdClient

log = logging.getLogger(__name__)

IDLE = 30.0          # seconds without a read before a session is stopped
RETRY_AFTER = 1.0    # seconds between a failed watch and the next one


class CaptureManager:
    def __init__(self, connect: Callable[[], EtcdClient], *, limit: int = BUFFER_LIMIT, idle: float = IDLE,
                 retry_after: float = RETRY_AFTER) -> None:
        self._connect = connect
        self._limit = limit
        self._idle = idle
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._session: Optional[CaptureSession] = None
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="capture-reaper", daemon=True)
        self._reaper.start()

    @property
    def session(self) -> Optional[CaptureSession]:
        return self._session

    def read(self, after: int, max_bytes: int) -> tuple[dict[str, Any], bytes]:
        """What ``capture.read`` answers (starting a watch from ``after + 1`` when that is needed)."""
        with self._lock:
            session = self._session
            restarted = False
            if session is None or session.needs_restart(after, time.monotonic(), self._retry_after):
                close_quietly(session, wait=0.0)
                session = CaptureSession(self._connect, after + 1, limit=self._limit)
                self._session = session
                restarted = True
                log.info("capture: watching every key from revision %d for the coordinator", after + 1)
                session.begin()
        result, data = session.read(after, max_bytes)
        result["restarted"] = restarted
        return result, data

    def stop_session(self) -> bool:
        """``capture.stop``: end the session (the coordinator captures elsewhere now); whether one ran."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            log.info("capture: stopped at the coordinator's request (at revision %d)", session.buffer.received)
        close_quietly(session, wait=0.0)
        return session is not None

    def _reap(self) -> None:
        while not self._stop.wait(min(5.0, self._idle / 2)):
            with self._lock:
                session = self._session
                if session is None or time.monotonic() - session.last_read < self._idle:
                    continue
                self._session = None
            log.info("capture: no read for %.0fs; the watch is stopped", self._idle)
            close_quietly(session, wait=0.0)

    def close(self) -> None:
        """At the agent's stop: end the session and wait briefly for its threads."""
        self._stop.set()
        with self._lock:
            session, self._session = self._session, None
        close_quietly(session, wait=2.0)
