"""The coordinator daemon: the vault schedule, the control socket, metrics, systemd.

Every ``[vault] interval`` (with jitter; at start if the vault's newest copy is
older than that) it asks every agent for its status and pulls the newest
verified snapshot of a healthy member into the vault, preferring a follower
to spare the leader, unless the vault already has it. The decisions are pure
functions over the agents' reports (``choose_pull``, ``choose_backup_member``)
that return what to do and one sentence saying why; the daemon logs the
sentence and carries the decision out.

Long work (a scheduled pull, ``etcdguardctl backup``) runs one at a time
(a single slot) in threads the daemon owns; signal handlers only set flags
and wake the loop, which keeps answering the systemd watchdog.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from etcdguard.agent import __version__
from etcdguard.agent.base import schedule
from etcdguard.agent.base.durations import format_bytes, format_duration
from etcdguard.agent.base.errors import (
    EtcdguardError,
    EtcdUnavailable,
    SnapshotCorrupt,
    SnapshotError,
    UnsafeRefusal,
    UsageError,
)
from etcdguard.agent.base.notify import Notifier
from etcdguard.agent.base.signals import SignalFlags
from etcdguard.agent.metrics import MetricsServer
from etcdguard.agent.wire.protocol import BUSY, RemoteError
from etcdguard.coordinator.config import (
    CoordinatorConfig,
    Keys,
    MemberSettings,
    load_coordinator_config,
    load_keys,
    require_members,
)
from etcdguard.coordinator.control.server import ControlServer, Emit, PeerCred
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.vault.store import Incoming, Vault, VaultDiskError, VaultEntry

log = logging.getLogger(__name__)

STATUS_REFRESH = 15.0
STOP_GRACE = 30.0
BUSY_POLL = 2.0
PROGRESS_EVERY = 0.25   # seconds between progress lines to a control client


# ---------------------------------------------------------------------------
# What the daemon needs of an agent client (coordinator/agents/client.py's AgentClient).


class AgentLink(Protocol):
    def call(self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
             retries: Optional[int] = None, data: Optional[bytes] = None) -> dict[str, Any]: ...

    def status(self, timeout: float = 5.0) -> dict[str, Any]: ...

    def fetch_snapshot(self, name: str, dest: Path, *, expected_sha256: str, expected_size: int,
                       progress: Optional[Callable[[int, int], None]] = None, credit: int = 4,
                       chunk: int = 1 << 20, timeout: float = 30.0) -> None: ...

    def close(self) -> None: ...


ClientFactory = Callable[[MemberSettings], AgentLink]


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


def _unreachable_types() -> tuple[type[BaseException], ...]:
    try:
        from etcdguard.coordinator.agents.client import AgentUnreachable
    except ImportError:   # pragma: no cover - the client module ships with the coordinator
        return ()
    return (AgentUnreachable,)


# ---------------------------------------------------------------------------
# The cluster as the agents report it (plain data), and the pure decisions.


@dataclass(frozen=True)
class MemberView:
    """One member at one moment: its agent's status report, or why there is none."""

    name: str
    agent: str
    reachable: bool
    error: Optional[str] = None
    report: Optional[Mapping[str, Any]] = None

    @property
    def etcd(self) -> Mapping[str, Any]:
        e = (self.report or {}).get("etcd")
        return e if isinstance(e, Mapping) else {}

    @property
    def healthy(self) -> bool:
        return self.reachable and self.etcd.get("healthy") is True

    @property
    def is_leader(self) -> bool:
        return self.etcd.get("is_leader") is True

    @property
    def busy(self) -> Optional[str]:
        agent = (self.report or {}).get("agent")
        busy = agent.get("busy") if isinstance(agent, Mapping) else None
        return str(busy) if busy else None

    @property
    def snapshots(self) -> list[Mapping[str, Any]]:
        snaps = (self.report or {}).get("snapshots")
        return [s for s in snaps if isinstance(s, Mapping)] if isinstance(snaps, list) else []

    @property
    def newest(self) -> Optional[Mapping[str, Any]]:
        snaps = self.snapshots
        return max(snaps, key=lambda s: float(s.get("created_unix") or 0)) if snaps else None


@dataclass(frozen=True)
class PullChoice:
    """What a scheduled pull should do: fetch ``snapshot`` from ``member``, or nothing."""

    sentence: str
    member: Optional[str] = None
    snapshot: Optional[Mapping[str, Any]] = None
    failure: Optional[str] = None   # a metrics reason when there is nothing to pull but should be


def choose_pull(views: Sequence[MemberView], in_vault: Callable[[str], bool],
                vault_newest: Optional[float], interval: float) -> PullChoice:
    """Pure: the newest verified snapshot of a healthy member, a follower's if one is as fresh.

    A follower's snapshot counts as "as fresh" when it is at most one interval
    older than the freshest; only then is the leader spared. Snapshots of
    unhealthy members are not pulled: a partitioned member serves a
    fresh-looking snapshot of stale data.
    """
    reachable = [v for v in views if v.reachable]
    if not reachable:
        return PullChoice(f"no agent answered ({len(views)} configured)", failure="unreachable")
    healthy = [v for v in reachable if v.healthy]
    if not healthy:
        return PullChoice(f"{len(reachable)} agent(s) answered but no member reports a healthy etcd",
                          failure="unreachable")
    candidates = [(v, v.newest) for v in healthy if v.newest is not None]
    if not candidates:
        return PullChoice("no healthy member has a snapshot in its store yet", failure="no_snapshot")
    freshest = max(float(s.get("created_unix") or 0) for _, s in candidates)

    def rank(item: tuple[MemberView, Optional[Mapping[str, Any]]]) -> tuple[bool, bool, float, str]:
        v, s = item
        assert s is not None
        created = float(s.get("created_unix") or 0)
        return (created >= freshest - interval, not v.is_leader, created, v.name)

    view, snap = max(candidates, key=rank)
    assert snap is not None
    role = "leader" if view.is_leader else "follower"
    sha = str(snap.get("sha256", ""))
    label = f"{snap.get('name')} of {role} {view.name} (revision {snap.get('revision')}, sha256 {sha[:12]})"
    if in_vault(sha):
        return PullChoice(f"the vault already has the newest snapshot, {label}")
    created = float(snap.get("created_unix") or 0)
    if vault_newest is not None and created <= vault_newest:
        return PullChoice(f"the newest snapshot of a healthy member, {label}, is not newer than the vault's")
    return PullChoice(f"pulling {label}", member=view.name, snapshot=snap)


def choose_backup_member(views: Sequence[MemberView], requested: Optional[str]) -> tuple[MemberView, str]:
    """Pure: the member to take a snapshot on now, and why. Raises for impossible requests."""
    if requested is not None:
        for v in views:
            if v.name == requested:
                break
        else:
            raise UsageError(f"no member named {requested!r} in the configuration "
                             f"(members: {', '.join(v.name for v in views)})")
        if not v.reachable:
            raise UnsafeRefusal(f"refused: the agent of member {v.name} ({v.agent}) is unreachable: {v.error}")
        if not v.healthy:
            raise UnsafeRefusal(f"refused: etcd on member {v.name} is not healthy "
                                f"({v.etcd.get('error') or 'no health report'}); a snapshot of it may hold "
                                "stale data")
        return v, f"member {v.name} as requested ({'leader' if v.is_leader else 'follower'})"
    healthy = [v for v in views if v.healthy]
    if not healthy:
        reachable = sum(1 for v in views if v.reachable)
        raise EtcdUnavailable(f"no member has a healthy etcd ({reachable} of {len(views)} agents answered); "
                              "nothing to take a snapshot of")
    followers = sorted((v for v in healthy if not v.is_leader), key=lambda v: (v.busy is not None, v.name))
    if followers:
        return followers[0], f"follower {followers[0].name} (sparing the leader)"
    return healthy[0], f"leader {healthy[0].name} (no healthy follower)"


def failure_reason(exc: BaseException) -> str:
    """The metrics label for a failed vault copy."""
    if isinstance(exc, _unreachable_types()):
        return "unreachable"
    if isinstance(exc, RemoteError):
        return "busy" if exc.code == BUSY else "transfer"
    if isinstance(exc, SnapshotCorrupt):
        return "checksum"
    if isinstance(exc, (VaultDiskError, OSError)):
        return "disk"
    return "other"


def member_row(v: MemberView, now: float) -> dict[str, Any]:
    """One member's line of `etcdguardctl status` (plain data)."""
    report = v.report or {}
    agent = report.get("agent") if isinstance(report.get("agent"), Mapping) else {}
    newest = v.newest
    etcd = dict(v.etcd) if v.reachable else None
    return {
        "name": v.name,
        "agent": v.agent,
        "reachable": v.reachable,
        "error": v.error,
        "agent_version": agent.get("version") if agent else None,
        "busy": v.busy,
        "healthy": v.healthy,
        "is_leader": v.is_leader,
        "etcd": etcd,
        "revision": v.etcd.get("revision"),
        "cluster_id": v.etcd.get("cluster_id"),
        "member_id": v.etcd.get("member_id"),
        "restore_tool": report.get("restore_tool"),
        "disk": report.get("disk"),
        "newest_backup": None if newest is None else {
            "name": newest.get("name"), "sha256": newest.get("sha256"), "size": newest.get("size"),
            "revision": newest.get("revision"), "created_at": newest.get("created_at"),
            "age_seconds": max(0.0, now - float(newest.get("created_unix") or 0)),
        },
    }


def cluster_summary(views: Sequence[MemberView]) -> dict[str, Any]:
    """Leader and cluster id as the reachable members report them, and whether they agree.

    The leader is named by the member id each member reports; it is mapped to
    a name through the members' own ids, so a leader whose agent is down still
    shows (by id) instead of looking like a cluster without a leader.
    """
    up = [v for v in views if v.reachable]
    ids = sorted({str(v.etcd["cluster_id"]) for v in up if v.etcd.get("cluster_id")})
    leader_ids = sorted({str(v.etcd["leader"]) for v in up if v.etcd.get("leader")})
    names = {str(v.etcd["member_id"]): v.name for v in up if v.etcd.get("member_id")}
    claimed = sorted(v.name for v in up if v.is_leader)
    leader_id = leader_ids[0] if len(leader_ids) == 1 else None
    leader = names.get(leader_id) if leader_id is not None else None
    if leader is None and leader_id is None and len(claimed) == 1:
        leader = claimed[0]
    return {
        "leader": leader,
        "leader_id": leader_id,
        "leaders": claimed,              # members that say they lead (more than one: split brain)
        "leader_ids": leader_ids,        # the leaders the members point at (more than one: disagreement)
        "cluster_id": ids[0] if len(ids) == 1 else None,
        "cluster_ids": ids,
        "consistent": len(ids) <= 1 and len(leader_ids) <= 1 and len(claimed) <= 1,
        "reachable": len(up),
        "healthy": sum(1 for v in views if v.healthy),
        "members": len(views),
    }


# ---------------------------------------------------------------------------
# Links to the agents.


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

    def settings(self, name: str) -> MemberSettings:
        m = self.config.member(name)
        if m is None:
            raise UsageError(f"no member named {name!r} in {self.config.source}")
        return m

    def call(self, name: str, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float) -> dict[str, Any]:
        with self._locks[name]:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = self.factory(self.settings(name))
            return client.call(op, args, timeout=timeout)

    def status(self, name: str, timeout: float) -> dict[str, Any]:
        with self._locks[name]:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = self.factory(self.settings(name))
            return client.status(timeout=timeout)

    def dedicated(self, name: str) -> AgentLink:
        """A client of its own for one long operation; the caller closes it."""
        return self.factory(self.settings(name))

    def survey(self, timeout: float) -> list[MemberView]:
        """Every member's status, asked in parallel."""
        members = self.config.members

        def ask(m: MemberSettings) -> MemberView:
            try:
                return MemberView(m.name, m.agent, True, report=self.status(m.name, timeout))
            except EtcdguardError as exc:
                return MemberView(m.name, m.agent, False, error=str(exc))

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(members)),
                                                   thread_name_prefix="survey") as pool:
            return list(pool.map(ask, members))

    def close(self) -> None:
        for name, client in list(self._clients.items()):
            with self._locks[name]:
                client.close()
        self._clients.clear()


# ---------------------------------------------------------------------------
# The daemon.


class Throttled:
    """Forwards progress to a control client at most every PROGRESS_EVERY seconds (and the last one)."""

    def __init__(self, emit: Emit, **fields: Any) -> None:
        self.emit = emit
        self.fields = fields
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        self.emit({**self.fields, "bytes": done, "total": total})


def _discard(_: Mapping[str, Any]) -> None:
    return None


class CoordinatorDaemon(SignalFlags):
    def __init__(self, config_path: Optional[Path], config: CoordinatorConfig,
                 client_factory: Optional[ClientFactory] = None) -> None:
        super().__init__()
        self.config_path = config_path
        self.config = config
        self._custom_factory = client_factory
        self.notifier = Notifier()
        self.metrics = CoordinatorMetrics()
        self.metrics.interval.set(config.vault.interval)
        self.metrics.members.set(len(config.members))
        self.vault = Vault(config.vault.dir)
        self.links: Optional[MemberLinks] = None
        self.control: Optional[ControlServer] = None
        self.metrics_server: Optional[MetricsServer] = None
        self._slot = threading.Lock()          # one long operation (pull or backup) at a time
        self._doing: Optional[str] = None      # what the slot holder does, for status
        self._rng = random.Random()
        self._worker: Optional[threading.Thread] = None
        self._worker_ok = False
        self._failures = 0
        self.last_pull: Optional[dict[str, Any]] = None
        self.next_due = 0.0

    # -- setup -------------------------------------------------------------
    def _factory(self, config: CoordinatorConfig) -> ClientFactory:
        if self._custom_factory is not None:
            return self._custom_factory
        return default_client_factory(config, load_keys(config))

    def _start_metrics(self) -> None:
        if self.config.metrics.listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics.listen)
            try:
                self.metrics_server.start()
            except OSError as exc:
                self.metrics_server = None
                raise EtcdguardError(f"metrics.listen {self.config.metrics.listen}: {exc.strerror or exc}") from None
            log.info("metrics on http://%s:%d/metrics", self.metrics_server.host, self.metrics_server.port)

    def refresh_vault_metrics(self) -> list[VaultEntry]:
        entries = self.vault.list()
        self.metrics.retained.set(len(entries))
        self.metrics.bytes.set(sum(e.size for e in entries))
        newest = entries[0] if entries else None
        self.metrics.record_newest(newest.created_unix if newest else None, newest.size if newest else 0,
                                   newest.revision if newest else 0)
        return entries

    def _survey(self) -> list[MemberView]:
        assert self.links is not None
        views = self.links.survey(self.config.coordinator.request_timeout)
        self.metrics.members_reachable.set(sum(1 for v in views if v.reachable))
        return views

    # -- control requests ----------------------------------------------------
    def handle(self, cmd: str, args: dict[str, Any], emit: Emit, peer: PeerCred) -> Any:
        """Serve one etcdguardctl request (in its own thread)."""
        if cmd == "ping":
            return {"version": __version__}
        if cmd == "status":
            return self.status_report()
        if cmd == "snapshots":
            return [e.to_json() for e in self.vault.list()]
        if cmd == "backup":
            member = args.get("member")
            if member is not None and not isinstance(member, str):
                raise UsageError("backup: 'member' must be a member name")
            return self.backup(member, emit)
        raise UsageError(f"unknown command {cmd!r} (this coordinator knows: status, snapshots, backup)")

    def status_report(self) -> dict[str, Any]:
        views = self._survey()
        now = time.time()
        entries = self.vault.list()
        newest = entries[0] if entries else None
        return {
            "members": [member_row(v, now) for v in views],
            "cluster": cluster_summary(views),
            "vault": {
                "dir": str(self.vault.dir),
                "count": len(entries),
                "bytes": sum(e.size for e in entries),
                "keep": self.config.vault.keep,
                "interval_seconds": self.config.vault.interval,
                "newest": newest.to_json() if newest else None,
                "newest_age_seconds": (now - newest.created_unix) if newest else None,
            },
            "coordinator": {
                "version": __version__,
                "busy": self._doing,
                "next_pull_in_seconds": max(0.0, self.next_due - now) if self.next_due else None,
                "last_pull": self.last_pull,
                "insecure": self.config.coordinator.insecure,
            },
        }

    def backup(self, member: Optional[str], emit: Emit) -> dict[str, Any]:
        """Take a snapshot on ``member`` (default: a healthy follower) and pull it into the vault."""
        if member is not None and self.config.member(member) is None:
            raise UsageError(f"no member named {member!r} in the configuration "
                             f"(members: {', '.join(m.name for m in self.config.members)})")
        if not self._slot.acquire(blocking=False):
            emit({"stage": "wait", "message": f"waiting for the running operation: {self._doing}"})
            self._slot.acquire()
        try:
            self._doing = "backup: choosing a member"
            views = self._survey()
            view, why = choose_backup_member(views, member)
            log.info("backup requested: %s", why)
            emit({"stage": "take", "member": view.name, "message": f"taking a snapshot on {why}"})
            self._doing = f"backup: taking a snapshot on {view.name}"
            started = time.monotonic()
            try:
                meta = self._take(view.name, emit)
                entry, pulled = self._pull(view.name, meta, emit)
            except EtcdguardError as exc:
                self.metrics.record_failure(failure_reason(exc))
                raise
            took = time.monotonic() - started
            self.last_pull = {"at": time.time(), "ok": True, "member": view.name, "sha256": entry.sha256,
                              "message": f"backup on {view.name}"}
            return {"member": view.name, "why": why, "snapshot": dict(meta), "entry": entry.to_json(),
                    "pulled": pulled, "duration_seconds": took}
        finally:
            self._doing = None
            self._slot.release()
            self._wake.set()   # the loop refreshes its status line and schedule

    def _take(self, name: str, emit: Emit) -> Mapping[str, Any]:
        """snapshot.take on one agent; waits while the agent is busy with its own snapshot."""
        assert self.links is not None
        deadline = time.monotonic() + self.config.vault.timeout
        client = self.links.dedicated(name)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    limit = format_duration(self.config.vault.timeout)
                    raise SnapshotError(f"member {name}: no snapshot within {limit} ([vault] timeout)")
                try:
                    result = client.call("snapshot.take", {}, timeout=remaining, retries=0)
                except RemoteError as exc:
                    if exc.code != BUSY or self._stop:
                        raise
                    # Wait out a snapshot the agent takes on its own; never wait on a restore.
                    report = client.status(timeout=self.config.coordinator.request_timeout)
                    restore = report.get("restore")
                    restore = restore if isinstance(restore, Mapping) else {}
                    agent = report.get("agent")
                    busy = str(agent.get("busy") or "") if isinstance(agent, Mapping) else ""
                    if restore.get("locked") or restore.get("last_state") == "running" or busy.startswith("restore"):
                        raise UnsafeRefusal(f"refused: a restore operation is in progress on member {name} "
                                            f"({exc.message})") from None
                    emit({"stage": "wait", "member": name,
                          "message": f"member {name} is busy ({exc.message}); waiting"})
                    time.sleep(min(BUSY_POLL, max(0.0, deadline - time.monotonic())))
                    continue
                snap = result.get("snapshot")
                if not isinstance(snap, Mapping):
                    raise SnapshotError(f"member {name}: snapshot.take answered without a snapshot")
                return snap
        finally:
            client.close()

    def _pull(self, name: str, meta: Mapping[str, Any], emit: Emit) -> tuple[VaultEntry, bool]:
        """Fetch one catalogued snapshot of ``name`` into the vault (unless it is there)."""
        assert self.links is not None
        try:
            incoming = Incoming.from_agent(name, dict(meta))
        except ValueError as exc:
            raise SnapshotError(str(exc)) from None
        if self.vault.has(incoming.sha256):
            emit({"stage": "done", "member": name, "message": f"the vault already has {incoming.sha256[:12]}"})
        total = incoming.size
        progress = Throttled(emit, stage="fetch", member=name, name=incoming.original_name)
        self._doing = f"pulling {incoming.original_name} from {name}"
        links = self.links

        def track(done: int, total_: int) -> None:
            self._doing = (f"pulling {incoming.original_name} from {name}: "
                           f"{format_bytes(done)} of {format_bytes(total_)}")
            progress(done, total_)

        def fetch(dest: Path) -> None:
            client = links.dedicated(name)
            try:
                client.fetch_snapshot(incoming.original_name, dest, expected_sha256=incoming.sha256,
                                      expected_size=total, progress=track,
                                      timeout=max(30.0, self.config.coordinator.request_timeout))
            finally:
                client.close()

        started = time.monotonic()
        entry, pulled = self.vault.pull(incoming, fetch)
        if pulled:
            took = time.monotonic() - started
            self.metrics.duration.observe(took)
            log.info("vault: pulled %s from %s: %s in %s (%s/s)", incoming.original_name, name,
                     format_bytes(total), format_duration(took), format_bytes(total / took if took > 0 else 0))
        self._retention()
        return entry, pulled

    def _retention(self) -> None:
        self.vault.apply_retention(self.config.vault.keep)
        self.refresh_vault_metrics()

    # -- the scheduled pull ----------------------------------------------------
    def pull_once(self) -> bool:
        """One scheduled pull (in the worker thread). True when the vault is up to date."""
        if not self._slot.acquire(blocking=False):
            log.info("vault pull postponed: %s", self._doing)
            return True
        try:
            self._doing = "vault pull: asking the agents"
            views = self._survey()
            newest = self.vault.newest()
            choice = choose_pull(views, lambda sha: self.vault.has(sha) is not None,
                                 newest.created_unix if newest else None, self.config.vault.interval)
            log.info("vault: %s", choice.sentence)
            if choice.member is None or choice.snapshot is None:
                if choice.failure is not None:
                    self.metrics.record_failure(choice.failure)
                self.last_pull = {"at": time.time(), "ok": choice.failure is None, "message": choice.sentence}
                return choice.failure is None
            try:
                entry, _ = self._pull(choice.member, choice.snapshot, _discard)
            except EtcdguardError as exc:
                reason = failure_reason(exc)
                self.metrics.record_failure(reason)
                log.error("vault pull from %s failed (%s): %s", choice.member, reason, exc)
                self.last_pull = {"at": time.time(), "ok": False, "member": choice.member, "message": str(exc)}
                return False
            self.last_pull = {"at": time.time(), "ok": True, "member": choice.member, "sha256": entry.sha256,
                              "message": choice.sentence}
            return True
        finally:
            self._doing = None
            self._slot.release()

    def _start_pull(self) -> None:
        def work() -> None:
            ok = False
            try:
                ok = self.pull_once()
            except Exception:  # a bug must not kill the schedule; it is logged
                log.exception("vault pull: internal error")
                self.metrics.record_failure("other")
            finally:
                self._worker_ok = ok
                self._wake.set()

        self._worker = threading.Thread(target=work, name="vault-pull", daemon=True)
        self._worker.start()

    def _finish_pull(self) -> None:
        assert self._worker is not None
        self._worker.join()
        self._worker = None
        now = time.time()
        interval = self.config.vault.interval
        if self._worker_ok:
            self._failures = 0
            self.next_due = schedule.after_success(now, interval, self._rng)
        else:
            self._failures += 1
            self.next_due = schedule.after_failure(now, interval, self._failures)

    def status_line(self) -> str:
        if self._doing:
            return self._doing
        newest = self.vault.newest()
        vault = "vault empty" if newest is None else (
            f"vault newest {format_duration(time.time() - newest.created_unix)} old "
            f"(from {newest.source_member}, revision {newest.revision})")
        failing = f"; {self._failures} pull(s) failed in a row" if self._failures else ""
        return f"{vault}{failing}; next pull in {format_duration(max(0.0, self.next_due - time.time()))}"

    # -- reload ------------------------------------------------------------
    def _do_reload(self) -> None:
        self._reload = False
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return
        self.notifier.reloading()
        try:
            config = load_coordinator_config(self.config_path)
            require_members(config)
            links = MemberLinks(config, self._factory(config))
            vault = Vault(config.vault.dir)
            vault.prepare()
        except EtcdguardError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.notifier.status(f"reload failed: {exc}")
            return
        if config.coordinator.control_socket != self.config.coordinator.control_socket:
            log.warning("control_socket changed to %s: takes effect at the next restart",
                        config.coordinator.control_socket)
        if config.coordinator.insecure:
            log.warning("insecure = true: talking to the agents over plain TCP, unauthenticated and unencrypted")
        old_metrics = self.config.metrics.listen
        with self._slot:   # no long operation uses the old links or vault from here on
            old_links, self.links = self.links, links
            self.config = config
            self.vault = vault
        if old_links is not None:
            old_links.close()
        if config.metrics.listen != old_metrics:
            if self.metrics_server is not None:
                self.metrics_server.stop()
                self.metrics_server = None
            try:
                self._start_metrics()
            except EtcdguardError as exc:
                log.error("%s; metrics stay off until the next reload", exc)
        self.metrics.interval.set(config.vault.interval)
        self.metrics.members.set(len(config.members))
        self.refresh_vault_metrics()
        newest = self.vault.newest()
        self.next_due = min(self.next_due, schedule.first_due(
            newest.created_unix if newest else None, config.vault.interval, time.time()))
        log.info("configuration reloaded from %s (%d members)", self.config_path, len(config.members))

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        require_members(self.config)
        if self.config.coordinator.insecure:
            log.warning("insecure = true: talking to the agents over plain TCP, unauthenticated and "
                        "unencrypted; anyone on the network can impersonate an agent")
        self.links = MemberLinks(self.config, self._factory(self.config))
        self.vault.prepare()
        self.refresh_vault_metrics()
        self.control = ControlServer(self.config.coordinator.control_socket, self.handle)
        self.control.start()
        try:
            self._start_metrics()
            return self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> int:
        views = self._survey()
        summary = cluster_summary(views)
        newest = self.vault.newest()
        self.next_due = schedule.first_due(newest.created_unix if newest else None, self.config.vault.interval,
                                           time.time())
        log.info("coordinator ready: %d/%d agents reachable, %d healthy, leader %s; vault %s (%d snapshots, "
                 "keep %d, every %s)", summary["reachable"], summary["members"], summary["healthy"],
                 summary["leader"] or "unknown", self.vault.dir, len(self.vault.list()), self.config.vault.keep,
                 format_duration(self.config.vault.interval))
        for v in views:
            if not v.reachable:
                log.warning("member %s: agent %s unreachable: %s", v.name, v.agent, v.error)
        self.notifier.ready(self.status_line())
        tick = min(STATUS_REFRESH, self.notifier.watchdog_interval or STATUS_REFRESH)
        while not self._stop:
            if self._worker is not None and not self._worker.is_alive():
                self._finish_pull()
            if self._reload and self._worker is None:
                self._do_reload()
            if self._worker is None and time.time() >= self.next_due and not self._stop:
                self._start_pull()
            self.notifier.watchdog()
            self.notifier.status(self.status_line())
            wait = tick if self._worker is not None else min(tick, max(0.0, self.next_due - time.time()))
            self._wake.wait(wait)
            self._wake.clear()
        return 0

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.control is not None:
            self.control.stop()
        # A pull or an etcdguardctl backup may still run: give it time to finish cleanly.
        idle = self._slot.acquire(timeout=STOP_GRACE)
        if not idle:
            log.error("%s did not finish within %ss; its temp file is removed at the next start",
                      self._doing or "a vault pull", STOP_GRACE)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.links is not None and idle:
            self.links.close()
        if idle:
            self._slot.release()
        log.info("coordinator stopped")
