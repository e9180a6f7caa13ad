"""A client that keeps writing while an operation runs: every acknowledged write must be there afterwards.

``Writer`` puts ``{prefix}{n:06d}`` keys through the given members in turn
(one gRPC client each, the agent's own), from a thread, until stopped. A put
that fails (a leader election, the member being replaced) is not counted;
only the acknowledged ones are, and each of those must be readable from
every member once the cluster is whole again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Optional

from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd.client import EtcdClient

from .etcd import EtcdMember


class Writer:
    def __init__(self, members: Sequence[EtcdMember], prefix: str = "/registry/writer/", pause: float = 0.01) -> None:
        self.members = list(members)
        self.prefix = prefix
        self.pause = pause
        self.acked: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        clients = [EtcdClient(m.client_url, timeout=2.0) for m in self.members]
        try:
            n = 0
            while not self._stop.is_set():
                key = f"{self.prefix}{n:06d}"
                try:
                    clients[n % len(clients)].put(key, f"v{n}")
                    self.acked.append(key)
                except EtcdUnavailable:
                    self.failed += 1
                n += 1
                time.sleep(self.pause)
        finally:
            for c in clients:
                c.close()

    def missing_on(self, member: EtcdMember) -> list[str]:
        """The acknowledged keys ``member`` does not have."""
        out = member.etcdctl("get", "--prefix", self.prefix, "--keys-only").stdout
        present = {line for line in out.splitlines() if line.strip()}
        return [k for k in self.acked if k not in present]
