"""The restore's door to the agents: steps that survive slow steps, restarts and lost replies.

A restore step may run for minutes (``prepare`` of a large snapshot), and an
agent may be restarted in the middle of one. ``ClusterAgents.step`` therefore
waits in slices: when a slice passes without a reply it pings the agent; an
agent that answers is still working (the step is re-sent, and the agent joins
the resend to the running step, or answers it from its record), one that
does not answer is given ``agent_down`` seconds to come back before the step
fails. A ``busy`` agent (its own scheduled snapshot) is waited for. Every
re-send is safe because agents deduplicate by (operation id, step).

Each member gets a client of its own for the operation, so the members'
steps run in parallel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.cluster_checks import NOT_RUNNING
from etcdguard.common.ops.step import Interrupted
from etcdguard.common.wire.protocol import BUSY, NOT_FOUND, RemoteError, new_request_id
from etcdguard.common.wire.report import EtcdHealth
from etcdguard.common.wire.typed import from_json
from etcdguard.coordinator.agents.client import AgentUnreachable
from etcdguard.coordinator.agents.links import AgentLink, MemberLinks

log = logging.getLogger(__name__)

SLICE = 3.0             # seconds a step request waits before the agent is pinged (and the step re-sent)
PING_TIMEOUT = 3.0
RETRY_PAUSE = 0.5       # between attempts while an agent is down or busy
HASHKV_TIMEOUT = 120.0  # etcd.inspect with a hashkv: it hashes every key at one revision


class StepTimeout(EtcdguardError):
    """A step did not finish within its bound."""


def held_name(listed: Mapping[str, Any], sha256: str, size: int) -> Optional[str]:
    """Pure: in a ``snapshot.list`` reply, the name of a staged copy or a store snapshot with this sha256
    and size (a staged copy first: it needs no catalog lookup), else None."""
    for key in ("staged", "snapshots"):
        for meta in listed.get(key) or []:
            if (isinstance(meta, dict) and meta.get("sha256") == sha256 and meta.get("size") == size
                    and isinstance(meta.get("name"), str) and meta["name"]):
                return str(meta["name"])
    return None


class ClusterAgents:
    """Dedicated links to every member's agent for one operation."""

    def __init__(self, links: MemberLinks, members: tuple[str, ...], *, agent_down: float = 60.0,
                 stop: Optional[threading.Event] = None) -> None:
        self.links = links
        self.agent_down = agent_down
        self.stop = stop or threading.Event()
        self._clients: dict[str, AgentLink] = {}
        self._lock = threading.Lock()
        self.members = members

    def client(self, member: str) -> AgentLink:
        with self._lock:
            c = self._clients.get(member)
            if c is None:
                c = self._clients[member] = self.links.dedicated(member)
            return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()

    def _pause(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted("the coordinator is stopping")

    def alive(self, member: str) -> bool:
        try:
            self.client(member).call("ping", {}, timeout=PING_TIMEOUT, retries=1)
            return True
        except EtcdguardError:
            return False

    def step(self, member: str, op: str, step: str, params: Optional[Mapping[str, Any]] = None, *,
             bound: float, flow: Optional[str] = None) -> dict[str, Any]:
        """Run restore.step ``step`` of ``op`` on ``member``: its (recorded) result, or raise.

        ``bound`` limits the whole step; ``flow`` names the operation's flow when it is not a restore.
        RemoteError carries the agent's refusal or failure; AgentUnreachable means the agent stayed away
        for ``agent_down`` seconds.
        """
        args: dict[str, Any] = {"op_id": op, "step": step}
        if params is not None:
            args["params"] = dict(params)
        if flow is not None:
            args["flow"] = flow
        deadline = time.monotonic() + bound
        down_since: Optional[float] = None
        # One request id for every re-send: the agent joins a re-send to the running step and its
        # reply then carries the id awaited, so the step's end is seen at once, not a slice later.
        rid = new_request_id()
        while True:
            if self.stop.is_set():
                raise Interrupted("the coordinator is stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepTimeout(f"member {member}: step {step} did not finish within {bound:.0f}s")
            try:
                return self.client(member).call("restore.step", args, timeout=min(SLICE, left), retries=0,
                                                request_id=rid)
            except AgentUnreachable as exc:
                if self.alive(member):
                    down_since = None
                    continue           # still working on it: ask again (joins the running step)
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > self.agent_down:
                    raise AgentUnreachable(f"member {member}: the agent did not answer for {self.agent_down:.0f}s "
                                           f"during step {step}: {exc}") from None
                log.warning("member %s: agent not answering during %s; waiting for it", member, step)
                self._pause(RETRY_PAUSE)
            except RemoteError as exc:
                if exc.code != BUSY:
                    raise
                log.info("member %s: agent busy (%s); step %s waits", member, exc.message, step)
                self._pause(RETRY_PAUSE)

    def undo(self, member: str, op: str, step: str, *, bound: float, flow: Optional[str] = None
             ) -> Optional[dict[str, Any]]:
        """An undo step; None when the agent has no such operation (nothing to undo there)."""
        try:
            return self.step(member, op, step, bound=bound, flow=flow)
        except RemoteError as exc:
            if exc.code == NOT_FOUND:
                return None
            raise

    def admin(self, member: str, action: str, args: Mapping[str, Any], *, bound: float) -> dict[str, Any]:
        """One ``etcd.admin`` call on ``member``'s agent, sent once (the caller reads the member list again
        after an error rather than resending a member add); a busy agent is waited for within ``bound``."""
        request = {"action": action, **args, "timeout": max(1, int(bound))}
        deadline = time.monotonic() + bound
        while True:
            if self.stop.is_set():
                raise Interrupted("the coordinator is stopping")
            try:
                result: dict[str, Any] = self.client(member).call("etcd.admin", request, timeout=bound + 5.0,
                                                                  retries=0)
                return result
            except RemoteError as exc:
                if exc.code != BUSY or time.monotonic() >= deadline:
                    raise
                log.info("member %s: agent busy (%s); %s waits", member, exc.message, action)
                self._pause(RETRY_PAUSE)

    def upload(self, member: str, path: Path, upload: str, *, progress: Optional[Callable[[int, int], None]],
               bound: float) -> dict[str, Any]:
        """Stage ``path`` on ``member`` as ``upload``, resuming after a lost connection or an agent restart."""
        deadline = time.monotonic() + bound
        while True:
            try:
                return self.client(member).put_snapshot(path, upload, progress=progress, timeout=30.0)
            except AgentUnreachable:
                if time.monotonic() >= deadline or self.stop.is_set():
                    raise
                log.warning("member %s: upload %s interrupted; resuming", member, upload)
                self._pause(RETRY_PAUSE)

    def held_snapshot(self, member: str, sha256: str, size: int) -> Optional[str]:
        """The name of a snapshot ``member`` holds with this sha256 and size: pre-staged there ahead of
        any restore (vault/prestage.py), or in its own store; None if it holds none.

        Such a member need not be sent the snapshot: its prepare step restores from that file, which it
        first verifies in full (sha256 and size, the trailer, `snapshot status`). Any error here only
        means the snapshot is sent as usual."""
        try:
            listed = self.client(member).call("snapshot.list", {}, timeout=10.0)
        except EtcdguardError as exc:
            log.info("member %s: its snapshots could not be listed (%s); the snapshot is sent", member, exc)
            return None
        return held_name(listed, sha256, size)

    def abort_upload(self, member: str, upload: str) -> bool:
        result = self.client(member).call("snapshot.put.abort", {"upload": upload}, timeout=10.0)
        return bool(result.get("removed"))

    def inspect(self, member: str, hashkv_revision: Optional[int] = None,
                timeout: float = 10.0) -> tuple[EtcdHealth, Optional[dict[str, Any]]]:
        """etcd on ``member`` asked now: (health, hashkv result or None).

        The health's ``error`` says "etcd is not running" when the agent's runtime
        knows that its etcd process is gone (it exited after a start, say)."""
        args: dict[str, Any] = {} if hashkv_revision is None else {"hashkv_revision": hashkv_revision}
        # A hashkv reads the whole store (seconds on a large one): one attempt with the whole deadline,
        # not the deadline split between retries.
        retries = 0 if hashkv_revision is not None else None
        result = self.client(member).call("etcd.inspect", args, timeout=max(timeout, HASHKV_TIMEOUT)
                                          if hashkv_revision is not None else timeout, retries=retries)
        try:
            health = from_json(EtcdHealth, result.get("etcd"), f"member {member}: etcd.inspect")
        except ValueError as exc:
            raise EtcdguardError(str(exc)) from None
        if result.get("running") is False and not health.healthy:
            health = replace(health, error=f"{NOT_RUNNING} ({health.error or 'no answer'})")
        hashkv = result.get("hashkv")
        return health, hashkv if isinstance(hashkv, dict) else None
