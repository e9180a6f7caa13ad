"""Pre-staging: every member holds the vault's newest snapshot before a restore needs it.

When a cluster is already down, every second of a restore is downtime; sending
a 300 MB snapshot to every member at restore time costs seconds that could
have been spent an hour earlier. So each snapshot that lands in the vault is
copied in the background to every member's agent (its staging area; the agent
checks the sha256 and the etcd trailer before it accepts it), with a
bandwidth cap (``[restore] prestage_rate``) so the copies never crowd out
etcd's own traffic; a member whose own store already holds that snapshot is
not sent it. Each member keeps one pre-staged snapshot: the newest; older
pre-staged copies are removed once the newer one is there. A restore's stage
then finds the snapshot on every member and sends nothing.

A restore always wins: while one runs (or the daemon stops), a copy in
progress is abandoned at its next chunk and picked up after it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import format_bytes, iso_utc
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.bump import bump_for
from etcdguard.coordinator.agents.links import MemberLinks
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.restore.agents import held_name
from etcdguard.coordinator.restore.refusals import peer_url
from etcdguard.coordinator.restore.warm import WarmChoice, WarmState, warm_initial_cluster
from etcdguard.coordinator.vault.entry import VaultEntry
from etcdguard.coordinator.vault.store import Vault, VaultBackendError

log = logging.getLogger(__name__)

PREFIX = "pre-"
RECHECK = 600.0       # seconds between checks when nothing wakes the pre-stager (an agent replaced, say)


def upload_id(sha256: str) -> str:
    """The staging name a pre-staged snapshot gets on every agent (the same for the same snapshot)."""
    return f"{PREFIX}{sha256[:16]}"


def stale_uploads(listing: Mapping[str, Any], keep: str) -> list[str]:
    """Pure: the pre-staged uploads in a ``snapshot.list`` reply other than ``keep`` (the newest's id)."""
    out = []
    for meta in listing.get("staged") or []:
        upload = meta.get("upload") if isinstance(meta, dict) else None
        if isinstance(upload, str) and upload.startswith(PREFIX) and upload != keep:
            out.append(upload)
    return sorted(out)


class _Once:
    """A value made by ``make`` the first time it is asked for (a failure is raised, and tried again at the
    next ask)."""

    def __init__(self, make: Callable[[], Path]) -> None:
        self._make = make
        self._value: Optional[Path] = None

    def __call__(self) -> Path:
        if self._value is None:
            self._value = self._make()
        return self._value


class Stopped(EtcdguardError):
    """A restore started (or the daemon stops): the copy in progress is abandoned."""


class RateLimit:
    """A transfer's progress callback that keeps its average at or below ``rate`` bytes per second
    (0: no cap), and abandons it (Stopped) as soon as ``stopped()`` says so."""

    def __init__(self, rate: int, stopped: Callable[[], bool], wait: Callable[[float], bool]) -> None:
        self.rate = rate
        self.stopped = stopped
        self.wait = wait
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self.stopped():
            raise Stopped("a restore started: pre-staging waits until it ends")
        if self.rate <= 0:
            return
        ahead = done / self.rate - (time.monotonic() - self.started)
        if ahead > 0 and self.wait(min(ahead, 1.0)):
            raise Stopped("the coordinator is stopping")


@dataclass
class MemberState:
    """What the pre-stager last knew of one member."""

    sha256: Optional[str] = None      # the snapshot it holds pre-staged (or in its store)
    name: Optional[str] = None
    at: Optional[float] = None
    error: Optional[str] = None
    warm: Optional[str] = None        # the warm standby token it holds that snapshot restored ahead with

    def to_json(self, newest: Optional[str], warm_token: Optional[str] = None) -> dict[str, Any]:
        """``warm``: it holds the newest snapshot restored ahead with the warm token a plan would take now."""
        return {"sha256": self.sha256, "name": self.name, "at": iso_utc(self.at) if self.at else None,
                "at_unix": self.at, "holds_newest": newest is not None and self.sha256 == newest,
                "error": self.error,
                "warm": warm_token is not None and self.warm == warm_token and self.sha256 == newest}


@dataclass
class Prestager:
    """Keeps the vault's newest snapshot on every member, in a thread of its own."""

    config: Callable[[], CoordinatorConfig]
    links: Callable[[], MemberLinks]
    vault: Callable[[], Vault]
    restoring: Callable[[], bool]
    on_change: Callable[[], None] = lambda: None
    members: dict[str, MemberState] = field(default_factory=dict)
    newest: Optional[str] = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    # -- the thread -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="prestage", daemon=True)
        self._thread.start()
        self.wake()

    def wake(self) -> None:
        """Look again now (a new snapshot in the vault, a restore ended)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RECHECK)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:   # the thread's outermost level: logged; the next wake tries again
                log.exception("pre-staging: internal error")

    # -- one round --------------------------------------------------------------------------
    def run_once(self) -> None:
        """Bring every member the vault's newest snapshot (unless a restore runs or it is switched off)."""
        if not self.config().restore.prestage or self.restoring():
            return
        try:
            entry = self.vault().resolve("latest")
        except (EtcdguardError, VaultBackendError) as exc:
            log.debug("pre-staging: no newest snapshot (%s)", exc)
            return
        self.newest = entry.sha256
        with contextlib.ExitStack() as stack:
            # read back (downloaded, decrypted, decompressed, checked) once for every member that needs it
            source = _Once(lambda: stack.enter_context(self.vault().materialize(entry)))
            for member in self.config().members:
                if self._stop.is_set() or self.restoring():
                    return
                self._one(member.name, entry, source)
        if self.config().restore.warm_standby:
            self._warm_all(entry)
        self.on_change()

    # -- warm standby -------------------------------------------------------------------
    def _warm_all(self, entry: VaultEntry) -> None:
        """Have every member that holds the newest snapshot restore it ahead (coordinator/restore/warm.py)."""
        config = self.config()
        views = self.links().survey(config.coordinator.request_timeout)
        urls = {v.name: peer_url(v) for v in views}
        cluster = warm_initial_cluster([m.name for m in config.members], urls)
        if cluster is None:
            log.info("warm standby: a member's peer URL is unknown now; nothing restored ahead")
            return
        live = [v.etcd.revision for v in views if v.etcd.revision is not None]
        configured = config.restore.bump_revision
        needed = bump_for(configured, entry.revision, max(live) if live else None)
        choice = WarmState(config.coordinator.state_dir).choose(entry.sha256, cluster, needed, configured)
        for member in config.members:
            state = self.members.get(member.name)
            if self._stop.is_set() or self.restoring() or state is None or state.sha256 != entry.sha256:
                continue
            self._warm_one(member.name, entry, choice, urls.get(member.name) or "")

    def _warm_one(self, member: str, entry: VaultEntry, choice: WarmChoice, url: str) -> None:
        state = self.members[member]
        link = self.links().dedicated(member)
        try:
            args: dict[str, Any] = {"snapshot": state.name, "sha256": entry.sha256, "name": member,
                                    "initial_cluster": choice.initial_cluster, "token": choice.token,
                                    "peer_url": url, "bump_revision": choice.bump_revision}
            if entry.revision_exact:
                args["revision"] = entry.revision
            result = link.call("restore.warm", args, timeout=self.config().restore.prepare_timeout, retries=0)
            state.warm = choice.token
            log.info("warm standby: %s holds %s restored ahead%s", member, entry.sha256[:12],
                     " (already)" if result.get("reused") else "")
        except EtcdguardError as exc:
            state.warm = None
            log.warning("warm standby: %s could not restore %s ahead: %s", member, entry.sha256[:12], exc)
        finally:
            link.close()

    def _one(self, member: str, entry: VaultEntry, source: Callable[[], Path]) -> None:
        state = self.members.setdefault(member, MemberState())
        link = self.links().dedicated(member)
        try:
            listing = link.call("snapshot.list", {}, timeout=10.0)
            held = held_name(listing, entry.sha256, entry.size)
            if held is None:
                held = self._send(link, member, entry, source)
                listing = link.call("snapshot.list", {}, timeout=10.0)
            for old in stale_uploads(listing, upload_id(entry.sha256)):
                link.call("snapshot.put.abort", {"upload": old}, timeout=10.0)
                log.info("pre-staging: removed %s from %s (a newer snapshot is staged there)", old, member)
            state.sha256, state.name, state.at, state.error = entry.sha256, held, time.time(), None
        except Stopped as exc:
            log.info("pre-staging on %s paused: %s", member, exc)
        except EtcdguardError as exc:
            state.error = str(exc)
            log.warning("pre-staging: member %s does not hold snapshot %s yet: %s", member, entry.sha256[:12], exc)
        finally:
            link.close()

    def _send(self, link: Any, member: str, entry: VaultEntry, source: Callable[[], Path]) -> str:
        path = source()
        limit = RateLimit(self.config().restore.prestage_rate, lambda: self.restoring() or self._stop.is_set(),
                          self._stop.wait)
        started = time.monotonic()
        result = link.put_snapshot(path, upload_id(entry.sha256), progress=limit, timeout=60.0)
        if not result.get("complete") or not isinstance(result.get("staged"), str):
            raise EtcdguardError(f"the upload to {member} did not complete: {result}")
        took = time.monotonic() - started
        log.info("pre-staging: %s staged on %s (%s in %.1fs)", entry.sha256[:12], member, format_bytes(entry.size),
                 took)
        return str(result["staged"])

    def report(self) -> dict[str, Any]:
        """For ``status``: which member holds the newest snapshot pre-staged."""
        config = self.config()
        choice = WarmState(config.coordinator.state_dir).read() if config.restore.warm_standby else None
        token = choice.token if choice is not None and choice.consumed_by is None else None
        return {"enabled": config.restore.prestage, "newest": self.newest, "warm_standby": choice is not None,
                "members": {m: s.to_json(self.newest, token) for m, s in sorted(self.members.items())}}
