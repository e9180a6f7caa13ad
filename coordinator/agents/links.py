"""Links to the agents: one client per member for short requests, a fresh one per long transfer.

``AgentLink`` is what the coordinator needs of an agent client
(coordinator/agents/client.py's AgentClient implements it); tests may pass a
factory of their own. ``survey`` asks every member in parallel and returns
typed views, so nothing downstream re-parses a status dict.

Two surveys, for two kinds of caller. ``survey(timeout)`` waits up to the
caller's deadline (a vault pull, a restore's plan: a slow agent should still
count). ``quick_survey`` is the operator's ``etcdguardctl status``: every agent
within STATUS_DEADLINE (one retry at most within it), on clients of its own,
so it never queues behind a slower request to the same agent; an agent that
did not answer in time is marked so instead of being waited out.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from etcdguard.common.base.errors import EtcdguardError, UsageError
from etcdguard.common.wire.report import AgentReport
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import CoordinatorConfig, Keys, MemberSettings


class AgentLink(Protocol):
    def call(self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
             retries: Optional[int] = None, data: Optional[bytes] = None,
             request_id: Optional[str] = None) -> dict[str, Any]: ...

    def status(self, timeout: float = 5.0, retries: Optional[int] = None) -> dict[str, Any]: ...

    def capture_read(self, after: int, size: int, timeout: float = 5.0) -> tuple[dict[str, Any], bytes]: ...

    def fetch_snapshot(self, name: str, dest: Path, *, expected_sha256: str, expected_size: int,
                       progress: Optional[Callable[[int, int], None]] = None, credit: int = 4,
                       chunk: int = 1 << 20, timeout: float = 30.0, zstd_level: Optional[int] = None) -> str: ...

    def fetch_bundle(self, name: str, dest: Path, *, max_size: int,
                     progress: Optional[Callable[[int, int], None]] = None, credit: int = 4,
                     chunk: int = 1 << 20, timeout: float = 30.0) -> None: ...

    def put_snapshot(self, src: Path, upload: str, *, progress: Optional[Callable[[int, int], None]] = None,
                     chunk: int = 1 << 20, credit: int = 4, timeout: float = 30.0) -> dict[str, Any]: ...

    def close(self) -> None: ...


ClientFactory = Callable[[MemberSettings], AgentLink]

STATUS_DEADLINE = 1.5    # seconds `etcdguardctl status` waits for every agent's report
STATUS_RETRIES = 1       # within that deadline: two attempts of half of it each


def default_client_factory(config: CoordinatorConfig, keys: Keys) -> ClientFactory:
    import zmq
    from etcdguard.coordinator.agents.client import AgentClient

    context: zmq.Context[Any] = zmq.Context.instance()

    def make(member: MemberSettings) -> AgentLink:
        client: AgentLink = AgentClient(member.name, member.agent, server_public_key=keys.members.get(member.name),
                                        client_public=keys.public, client_secret=keys.secret,
                                        insecure=config.coordinator.insecure, context=context)
        return client
    return make


def read_report(name: str, agent: str, data: Any) -> MemberView:
    """A view from a raw status reply; a report this coordinator cannot read counts as unreachable."""
    try:
        return MemberView(name, agent, True, report=AgentReport.from_json(data))
    except ValueError as exc:
        return MemberView(name, agent, False, error=f"the agent's status report cannot be read ({exc}); "
                                                   "are agent and coordinator the same version?")


class MemberLinks:
    """One client per member for short requests, and a fresh one for each long transfer.

    A client's socket is used by one thread at a time (the lock), so a status
    request waits at most one short request; a transfer never holds it.
    """

    def __init__(self, config: CoordinatorConfig, factory: ClientFactory) -> None:
        self.config = config
        self.factory = factory
        self._clients: dict[str, AgentLink] = {}
        self._locks = {m.name: threading.Lock() for m in config.members}
        self._quick: dict[str, AgentLink] = {}      # quick_survey's own clients
        self._quick_locks = {m.name: threading.Lock() for m in config.members}

    def settings(self, name: str) -> MemberSettings:
        m = self.config.member(name)
        if m is None:
            raise UsageError(f"no member named {name!r} in {self.config.source}")
        return m

    def _client(self, name: str) -> AgentLink:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.factory(self.settings(name))
        return client

    def call(self, name: str, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float) -> dict[str, Any]:
        with self._locks[name]:
            return self._client(name).call(op, args, timeout=timeout)

    def status(self, name: str, timeout: float) -> dict[str, Any]:
        with self._locks[name]:
            return self._client(name).status(timeout=timeout)

    def dedicated(self, name: str) -> AgentLink:
        """A client of its own for one long operation; the caller closes it."""
        return self.factory(self.settings(name))

    def view(self, name: str, timeout: float) -> MemberView:
        m = self.settings(name)
        try:
            return read_report(m.name, m.agent, self.status(m.name, timeout))
        except EtcdguardError as exc:
            return MemberView(m.name, m.agent, False, error=str(exc))

    def survey(self, timeout: float) -> list[MemberView]:
        """Every member's status, asked in parallel."""
        members = self.config.members
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(members)),
                                                   thread_name_prefix="survey") as pool:
            return list(pool.map(lambda m: self.view(m.name, timeout), members))

    def quick_view(self, name: str, deadline: float = STATUS_DEADLINE) -> MemberView:
        """One member's view within ``deadline`` seconds, or why not: for the operator's status."""
        m = self.settings(name)
        lock = self._quick_locks[name]
        started = time.monotonic()
        if not lock.acquire(timeout=deadline):
            return MemberView(m.name, m.agent, False, error=f"did not answer within {deadline:g}s (an earlier status "
                                                            "request to its agent is still waiting)")
        try:
            client = self._quick.get(name)
            if client is None:
                client = self._quick[name] = self.factory(m)
            left = round(deadline - (time.monotonic() - started), 2)
            return read_report(m.name, m.agent, client.status(timeout=max(0.05, left), retries=STATUS_RETRIES))
        except EtcdguardError as exc:   # AgentUnreachable: "... did not answer status within 1.5s ..."
            return MemberView(m.name, m.agent, False, error=str(exc))
        finally:
            lock.release()

    def quick_survey(self, deadline: float = STATUS_DEADLINE) -> list[MemberView]:
        """Every member's status within ``deadline`` seconds, asked in parallel; who did not answer is marked."""
        members = self.config.members
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(members)),
                                                   thread_name_prefix="status") as pool:
            return list(pool.map(lambda m: self.quick_view(m.name, deadline), members))

    def close(self) -> None:
        for name, client in list(self._clients.items()):
            with self._locks[name]:
                client.close()
        self._clients.clear()
        for name, client in list(self._quick.items()):
            with self._quick_locks[name]:
                client.close()
        self._quick.clear()
