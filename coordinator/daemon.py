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

import logging
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common import __version__
from etcdguard.common.base import schedule
from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EtcdguardError, SnapshotError, UnsafeRefusal, UsageError
from etcdguard.common.base.notify import Notifier
from etcdguard.common.base.polling import Deadline, PollTimeout, poll_until
from etcdguard.common.base.signals import SignalFlags
from etcdguard.common.metrics_server import MetricsServer, bind_replacement
from etcdguard.common.wire.protocol import BUSY, RemoteError
from etcdguard.coordinator.agents.links import ClientFactory, MemberLinks, default_client_factory, read_report
from etcdguard.coordinator.agents.view import MemberView, cluster_summary, member_row
from etcdguard.coordinator.config import CoordinatorConfig, load_coordinator_config, load_keys, require_members
from etcdguard.coordinator.control.server import ControlServer, Emit, PeerCred
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.restore.orchestrator import summarize
from etcdguard.coordinator.restore.service import RestoreService
from etcdguard.coordinator.vault import commands as vault_commands
from etcdguard.coordinator.vault.factory import open_vault
from etcdguard.coordinator.vault.policy import choose_backup_member, choose_pull, failure_reason
from etcdguard.coordinator.vault.store import Incoming, VaultBackendError, VaultEntry

log = logging.getLogger(__name__)

STATUS_REFRESH = 15.0
STOP_GRACE = 30.0
BUSY_POLL = 2.0
PROGRESS_EVERY = 0.25   # seconds between progress lines to a control client


def fresh_as_of(newest: float, confirmed: Optional[float], wall_now: float) -> float:
    """Pure: how fresh the vault's data is: its newest snapshot's stamp or a later confirmation that a
    member holds the same data; a stamp from the future (a clock stepped back) counts only when no
    other is known, so it cannot hold the vault's age at 0."""
    stamps = [t for t in (newest, confirmed) if t is not None]
    sane = [t for t in stamps if t <= wall_now + schedule.CLOCK_TOLERANCE]
    return max(sane) if sane else max(stamps)


def damaged_row(op: str, why: str) -> dict[str, Any]:
    """A journal that cannot be read, as a row of `etcdguardctl restores` (state ``damaged``)."""
    return {"op": op, "state": "damaged", "error": why, "plan_id": None, "kind": None, "snapshot": None,
            "created_at": None, "ended_at": None, "until": None, "failed_phase": None, "phases": {},
            "reverts": {}, "facts": {}, "members": []}


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


def _member_arg(args: Mapping[str, Any]) -> Optional[str]:
    member = args.get("member")
    if member is not None and not isinstance(member, str):
        raise UsageError("backup: 'member' must be a member name")
    return member


class CoordinatorDaemon(SignalFlags):
    def __init__(self, config_path: Optional[Path], config: CoordinatorConfig,
                 client_factory: Optional[ClientFactory] = None) -> None:
        super().__init__()
        self.config_path = config_path
        self.config = config
        self._custom_factory = client_factory
        self.notifier = Notifier()
        self.metrics = CoordinatorMetrics(backend=config.vault.backend)
        self.metrics.interval.set(config.vault.interval)
        self.metrics.members.set(len(config.members))
        self.vault = open_vault(config, self.metrics.record_backend_failure)
        self.metrics.offsite_source = lambda: self.vault.seen_at
        self.links: Optional[MemberLinks] = None
        self.control: Optional[ControlServer] = None
        self.metrics_server: Optional[MetricsServer] = None
        self._slot = threading.Lock()          # one long operation (pull, backup, restore) at a time
        self._doing: Optional[str] = None      # what the slot holder does, for status
        self._rng = random.Random()
        self._worker: Optional[threading.Thread] = None
        self._worker_ok = False
        self._failures = 0
        self.last_pull: Optional[dict[str, Any]] = None
        self.next_due = 0.0
        self._restore_stop = threading.Event()
        self.restores = RestoreService(
            config=lambda: self.config, links=self._require_links, vault=lambda: self.vault,
            safety_snapshot=self.safety_snapshot, slot=self._slot, on_change=self._restore_changed,
            stop=self._restore_stop)
        # Read at every scrape: a journal damaged on disk shows even while no restore changes.
        self.metrics.restore_damaged.set_function(lambda: len(self.restores.journals.damaged()))

    # -- setup -------------------------------------------------------------
    def _factory(self, config: CoordinatorConfig) -> ClientFactory:
        if self._custom_factory is not None:
            return self._custom_factory
        return default_client_factory(config, load_keys(config))

    def _start_metrics(self) -> None:
        if self.config.metrics.listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics.listen)
            try:
                self.metrics_server.start()   # a port that cannot be bound is a ConfigError (exit 2)
            except EtcdguardError:
                self.metrics_server = None
                raise
            log.info("metrics on %s", self.metrics_server.url)

    def refresh_vault_metrics(self) -> list[VaultEntry]:
        try:
            entries = self.vault.list()
        except VaultBackendError as exc:
            log.error("vault: %s", exc)
            return []
        self.metrics.retained.set(len(entries))
        self.metrics.bytes.set(sum(e.size for e in entries))
        self.metrics.record_vault([e.created_unix for e in entries])
        newest = entries[0] if entries else None   # by revision, whatever the clocks stamped
        self.metrics.record_newest(fresh_as_of(newest.created_unix, self.vault.fresh_as_of, time.time())
                                   if newest else None, newest.size if newest else 0, newest.revision if newest else 0)
        return entries

    def _survey(self) -> list[MemberView]:
        assert self.links is not None
        views = self.links.survey(self.config.coordinator.request_timeout)
        self.metrics.members_reachable.set(sum(1 for v in views if v.reachable))
        return views

    # -- control requests ----------------------------------------------------
    def _require_links(self) -> MemberLinks:
        assert self.links is not None
        return self.links

    def _restore_changed(self) -> None:
        self.refresh_restore_metrics()
        self._wake.set()

    def handle(self, cmd: str, args: dict[str, Any], emit: Emit, peer: PeerCred) -> Any:
        """Serve one etcdguardctl request (in its own thread)."""
        handler = self.commands().get(cmd)
        if handler is None:
            raise UsageError(f"unknown command {cmd!r} (this coordinator knows: {', '.join(self.commands())})")
        return handler(args, emit)

    def commands(self) -> dict[str, Callable[[dict[str, Any], Emit], Any]]:
        """etcdguardctl's commands: name -> handler(args, emit)."""
        return {
            "ping": lambda args, emit: {"version": __version__},
            "status": lambda args, emit: self.status_report(),
            "snapshots": lambda args, emit: [e.to_json() for e in self.vault.list()],
            "backup": lambda args, emit: self.backup(_member_arg(args), emit),
            "restore": self.restores.command,
            "restores": lambda args, emit: [r.to_json() for r in self.restores.records()] + [
                damaged_row(op, why) for op, why in self.restores.journals.damaged()],
            **{cmd: self._vault_command(cmd) for cmd in vault_commands.COMMANDS},
        }

    def _vault_command(self, cmd: str) -> Callable[[dict[str, Any], Emit], Any]:
        return lambda args, emit: vault_commands.handle(self.vault, cmd, args)

    def safety_snapshot(self, op: str, emit: Emit) -> Optional[str]:
        """Before a restore: a fresh snapshot of the live cluster into the vault, pinned until deleted.

        Runs inside the restore, which holds the daemon's slot already."""
        views = self._survey()
        view, why = choose_backup_member(views, None)
        emit({"message": f"pre-restore safety snapshot on {why}", "member": view.name})
        meta = self._take(view.name, emit)
        entry, _ = self._pull(view.name, meta, emit)
        self.vault.pin(entry.sha256, f"pre-restore {op}")
        emit({"message": f"pre-restore snapshot {entry.sha256[:12]} (revision {entry.revision}) is in the vault, "
                         "pinned", "member": view.name})
        return entry.sha256

    def refresh_restore_metrics(self) -> None:
        records = self.restores.records()
        active = self.restores.active()
        self.metrics.restore_in_progress.set(1 if active else 0)
        self.metrics.restore_interrupted.set(sum(1 for r in records if r.state.value in
                                                 ("interrupted", "paused", "needs-attention")))
        ended = [r for r in records if r.state.value in ("done", "failed", "rolled-back")]
        if ended:
            last = summarize(ended[-1])
            self.metrics.restore_last_result.set(0 if last.state == "failed" else 1)
            for timing in last.phases:
                self.metrics.restore_phase_duration.labels(phase=timing.phase).set(timing.seconds)
            if last.downtime_seconds is not None:
                self.metrics.restore_downtime.set(last.downtime_seconds)

    def status_report(self) -> dict[str, Any]:
        views = self._survey()
        now = time.time()
        vault_error = None
        try:
            entries = self.vault.list()
        except VaultBackendError as exc:
            entries, vault_error = [], str(exc)
        newest = entries[0] if entries else None
        return {
            "members": [member_row(v, now) for v in views],
            "cluster": cluster_summary(views),
            "vault": {
                "dir": self.vault.location,
                "backend": self.vault.backend,
                "encrypted": self.vault.encrypted,
                "error": vault_error,
                "count": len(entries),
                "bytes": sum(e.size for e in entries),
                "keep": self.config.vault.keep,
                "interval_seconds": self.config.vault.interval,
                "newest": newest.to_json() if newest else None,
                "newest_age_seconds": schedule.age_of(newest.created_unix, now) if newest else None,
            },
            "restores": self._restore_status(),
            "coordinator": {
                "version": __version__,
                "busy": self._doing,
                "next_pull_in_seconds": max(0.0, self.next_due - time.monotonic()) if self.next_due else None,
                "last_pull": self.last_pull,
                "insecure": self.config.coordinator.insecure,
            },
        }

    def _restore_status(self) -> dict[str, Any]:
        """The running restore and every one that waits for the operator (interrupted, paused, ...)."""
        active = self.restores.active()
        waiting = [{"op": r.op, "state": r.state.value, "phase": r.reached()[-1] if r.reached() else None,
                    "error": r.error} for r in self.restores.records()
                   if r.state.value in ("interrupted", "paused", "needs-attention")]
        return {"running": {"op": active[0], "doing": active[1]} if active else None, "waiting": waiting,
                "damaged": [f"{op}: {why}" for op, why in self.restores.journals.damaged()]}

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
        deadline = Deadline(self.config.vault.timeout)
        client = self.links.dedicated(name)

        def attempt() -> Optional[tuple[Mapping[str, Any]]]:
            """(the snapshot,), or None while the agent is busy with a snapshot of its own."""
            if deadline.expired:
                return None
            try:
                result = client.call("snapshot.take", {}, timeout=deadline.remaining(), retries=0)
            except RemoteError as exc:
                if exc.code != BUSY or self._stop:
                    raise
                # Wait out a snapshot the agent takes on its own; never wait on a restore.
                view = read_report(name, "", client.status(timeout=self.config.coordinator.request_timeout))
                restore = view.report.restore if view.report is not None else None
                busy = view.busy or ""
                if restore is None or restore.locked or restore.open_ops or busy.startswith("restore"):
                    raise UnsafeRefusal(f"refused: a restore operation is in progress on member {name} "
                                        f"({exc.message})") from None
                emit({"stage": "wait", "member": name,
                      "message": f"member {name} is busy ({exc.message}); waiting"})
                return None
            snap = result.get("snapshot")
            if not isinstance(snap, Mapping):
                raise SnapshotError(f"member {name}: snapshot.take answered without a snapshot")
            return (snap,)

        try:
            return poll_until(attempt, deadline, interval=BUSY_POLL, what=f"a snapshot of member {name}")[0]
        except PollTimeout:
            limit = format_duration(self.config.vault.timeout)
            raise SnapshotError(f"member {name}: no snapshot within {limit} ([vault] timeout)") from None
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
        else:
            dup = self.vault.holds_same(incoming)
            if dup is not None:
                emit({"stage": "done", "member": name, "message": (
                    f"the vault already holds revision {incoming.revision} of cluster {incoming.cluster_id} "
                    f"({dup.sha256[:12]}): nothing new to copy")})
                self.refresh_vault_metrics()
                return dup, False
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
        if pulled and incoming.bundle:
            entry = vault_commands.pull_bundle(self.vault, links.dedicated(name), incoming, entry)
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
            try:
                entries = self.vault.list()
            except VaultBackendError as exc:
                self.metrics.record_failure("backend")
                log.error("vault pull: %s", exc)
                self.last_pull = {"at": time.time(), "ok": False, "message": str(exc)}
                return False
            revisions: dict[str, int] = {}
            for e in entries:
                revisions[e.cluster_id] = max(revisions.get(e.cluster_id, e.revision), e.revision)
            choice = choose_pull(views, lambda sha: self.vault.has(sha) is not None, revisions,
                                 self.config.vault.interval,
                                 held={(e.cluster_id, e.revision) for e in entries if e.revision_exact})
            log.info("vault: %s", choice.sentence)
            if choice.fresh_as_of is not None:
                self.vault.confirm_current(choice.fresh_as_of)
                self.refresh_vault_metrics()
            if choice.member is None or choice.snapshot is None:
                if choice.failure is not None:
                    self.metrics.record_failure(choice.failure)
                self.last_pull = {"at": time.time(), "ok": choice.failure is None, "message": choice.sentence}
                return choice.failure is None
            try:
                entry, _ = self._pull(choice.member, choice.snapshot.to_json(), _discard)
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
        now = time.monotonic()
        interval = self.config.vault.interval
        if self._worker_ok:
            self._failures = 0
            self.next_due = schedule.after_success(now, interval, self._rng)
        else:
            self._failures += 1
            self.next_due = schedule.after_failure(now, interval, self._failures)

    def status_line(self) -> str:
        active = self.restores.active()
        if active is not None:
            return f"restore {active[0]}: {active[1]}"
        if self._doing:
            return self._doing
        newest = self.vault.newest_cached()
        vault = "vault empty" if newest is None else (
            f"vault newest {format_duration(max(0.0, time.time() - newest.created_unix))} old "
            f"(from {newest.source_member}, revision {newest.revision})")
        failing = f"; {self._failures} pull(s) failed in a row" if self._failures else ""
        return f"{vault}{failing}; next pull in {format_duration(max(0.0, self.next_due - time.monotonic()))}"

    def _first_due(self) -> float:
        """The first pull, on the monotonic clock: at once when the vault is empty, its newest copy older
        than the interval, or stamped in the future (its age is unknown)."""
        newest = self.vault.newest_cached()
        age = schedule.age_of(newest.created_unix if newest else None, time.time())
        if newest is not None and age is None:
            log.warning("the vault's newest snapshot %s is stamped in the future by this host's clock; pulling "
                        "now", newest.sha256[:12])
        return schedule.first_due_monotonic(age, self.config.vault.interval, time.monotonic())

    # -- reload ------------------------------------------------------------
    def _do_reload(self) -> None:
        self._reload = False
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return
        self.notifier.reloading()
        new_metrics: Optional[MetricsServer] = None
        try:
            config = load_coordinator_config(self.config_path)
            require_members(config)
            links = MemberLinks(config, self._factory(config))
            vault = open_vault(config, self.metrics.record_backend_failure)
            vault.prepare()
            if config.metrics.listen != self.config.metrics.listen and config.metrics.listen:
                new_metrics = bind_replacement(self.metrics.registry, config.metrics.listen, self.metrics_server)
        except (EtcdguardError, OSError) as exc:
            log.error("reload failed, kept the running configuration: %s", exc)
            self.notifier.status(f"reload failed: {exc}")
            return
        except Exception:   # a bug must not end the daemon that keeps the vault and runs restores
            log.exception("reload failed (internal error), kept the running configuration")
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
        self.metrics.set_backend(config.vault.backend)
        if old_links is not None:
            old_links.close()
        if config.metrics.listen != old_metrics:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.metrics_server = new_metrics
            if new_metrics is not None:
                log.info("metrics on %s", new_metrics.url)
        self.metrics.interval.set(config.vault.interval)
        self.metrics.members.set(len(config.members))
        self.refresh_vault_metrics()
        self.next_due = min(self.next_due, self._first_due())
        log.info("configuration reloaded from %s (%d members)", self.config_path, len(config.members))

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        require_members(self.config)
        if self.config.coordinator.insecure:
            log.warning("insecure = true: talking to the agents over plain TCP, unauthenticated and "
                        "unencrypted; anyone on the network can impersonate an agent")
        self.links = MemberLinks(self.config, self._factory(self.config))
        try:
            self.vault.prepare()
        except VaultBackendError as exc:   # the bucket may come back; every pull tries again
            log.error("vault: %s", exc)
        self.refresh_vault_metrics()
        self.restores.recover()
        self.refresh_restore_metrics()
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
        self.next_due = self._first_due()
        log.info("coordinator ready: %d/%d agents reachable, %d healthy, leader %s; vault %s (%d snapshots, "
                 "keep %d, every %s)", summary["reachable"], summary["members"], summary["healthy"],
                 summary["leader"] or "unknown", self.vault.location, len(self.vault.listed),
                 self.config.vault.keep,
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
            if self._worker is None and time.monotonic() >= self.next_due and not self._stop:
                self._start_pull()
            self.notifier.watchdog()
            self.notifier.status(self.status_line())
            wait = tick if self._worker is not None else min(tick, max(0.0, self.next_due - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
        return 0

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self._restore_stop.set()   # a running restore stops at its next barrier, journaled as interrupted
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
