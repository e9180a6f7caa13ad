"""The coordinator daemon: its loop, reload, and the dispatch of etcdguardctl's commands.

Every ``[vault] interval`` (with jitter; at start if the vault's newest copy is
older than that) the loop starts a scheduled vault pull in a worker thread;
what a pull does (ask every agent, choose a member and a snapshot, copy it,
apply retention) is vault/pulls.py. The control socket's commands are
dispatched to their parts: backups and pulls (vault/pulls.py), restores
(restore/service.py), restore drills (drill/service.py, which also runs their
schedule in a thread of its own), the status report (status.py), pins
(vault/commands.py).

Long work (a scheduled pull, ``etcdguardctl backup``, a restore) runs one at
a time in the daemon's single slot (common/base/slot.py), in threads the
daemon owns; signal handlers only set flags and wake the loop, which keeps
answering the systemd watchdog. The vault is listed in a thread of its own
(vault/lister.py): ``status`` and ``snapshots`` answer from its last listing
(vault/catalog.py), so neither they nor the loop ever wait on the backend.
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
from etcdguard.common.base.durations import format_duration
from etcdguard.common.base.errors import EtcdguardError, UnsafeRefusal, UsageError
from etcdguard.common.base.notify import Notifier
from etcdguard.common.base.signals import SignalFlags
from etcdguard.common.base.slot import Slot
from etcdguard.common.metrics_server import MetricsServer, bind_replacement
from etcdguard.coordinator import status
from etcdguard.coordinator.agents.links import ClientFactory, MemberLinks, default_client_factory
from etcdguard.coordinator.agents.view import MemberView, cluster_summary
from etcdguard.coordinator.config import CoordinatorConfig, load_coordinator_config, load_keys, require_members
from etcdguard.coordinator.continuous.capture import Capture
from etcdguard.coordinator.continuous.report import continuous_report
from etcdguard.coordinator.control.server import ControlServer, Emit, PeerCred
from etcdguard.coordinator.diagnose.gather import gather
from etcdguard.coordinator.diagnose.verdict import diagnose
from etcdguard.coordinator.diagnose.verdict import to_json as verdict_json
from etcdguard.coordinator.drill.records import FILE_NAME as DRILLS_FILE
from etcdguard.coordinator.drill.records import DrillRecords
from etcdguard.coordinator.drill.service import Drills
from etcdguard.coordinator.members.service import MemberOperations
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.pitr.history import history
from etcdguard.coordinator.pitr.service import PointInTime, is_point_request
from etcdguard.coordinator.restore.orchestrator import summarize
from etcdguard.coordinator.restore.service import RestoreService
from etcdguard.coordinator.vault import commands as vault_commands
from etcdguard.coordinator.vault.attempts import SCHEDULED, Attempt
from etcdguard.coordinator.vault.catalog import OK, Listing, stale
from etcdguard.coordinator.vault.entry import MANUAL
from etcdguard.coordinator.vault.entry import SCHEDULED as SCHEDULED_KIND
from etcdguard.coordinator.vault.factory import open_vault
from etcdguard.coordinator.vault.lister import Lister
from etcdguard.coordinator.vault.policy import next_pull_due, retry_now
from etcdguard.coordinator.vault.prestage import Prestager
from etcdguard.coordinator.vault.pulls import VaultPulls
from etcdguard.coordinator.vault.safety import safety_snapshot
from etcdguard.coordinator.vault.store import Vault

log = logging.getLogger(__name__)

STATUS_REFRESH = 15.0
STOP_GRACE = 30.0
LIST_EVERY = 60.0      # the background listing's period
LIST_FRESH = 5.0       # status and snapshots ask for a new listing when the last result is older than this
LIST_WAIT = 1.0        # ... and wait this long for it before they answer from the last one
FIRST_LISTING = 2.0    # at start and reload: how long the first listing is waited for (a hung backend: not longer)


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
        self.lister = self._lister_of(self.vault)
        self.links: Optional[MemberLinks] = None
        self.control: Optional[ControlServer] = None
        self.metrics_server: Optional[MetricsServer] = None
        self.slot = Slot()          # one long operation (pull, backup, restore) at a time, and what it does
        self._reload_postponed = False
        self._rng = random.Random()
        self._worker: Optional[threading.Thread] = None
        self._worker_ok = False
        self._worker_before: Optional[Attempt] = None
        self._retried_for: Optional[float] = None   # the storage's recovery a failed copy was retried after
        self._schedule_lock = threading.Lock()
        self.next_due = 0.0
        self.pulls = VaultPulls(config=lambda: self.config, links=self._require_links, vault=lambda: self.vault,
                                metrics=self.metrics, slot=self.slot, survey=self._survey,
                                stopping=lambda: self._stop)
        self._restore_stop = threading.Event()
        self.restores = RestoreService(
            config=lambda: self.config, links=self._require_links, vault=lambda: self.vault,
            safety_snapshot=lambda op, emit: safety_snapshot(self.pulls, self.vault, op, emit), slot=self.slot,
            on_change=self._restore_changed, stop=self._restore_stop)
        self.members_ops = MemberOperations(config=lambda: self.config, links=self._require_links,
                                            restores=self.restores)
        # Read at every scrape: a journal damaged on disk shows even while no restore changes.
        self.metrics.restore_damaged.set_function(lambda: len(self.restores.journals.damaged()))
        self.prestage = Prestager(config=lambda: self.config, links=self._require_links, vault=lambda: self.vault,
                                  restoring=lambda: self.restores.active() is not None,
                                  on_change=self._prestage_changed)
        self.capture = Capture(config=lambda: self.config, links=self._require_links, vault=lambda: self.vault,
                               restoring=lambda: self.restores.active() is not None,
                               snapshot_now=self._snapshot_for_capture, on_gap=self.metrics.continuous_gaps.inc)
        self._capture_snapshot: Optional[threading.Thread] = None
        self.pitr = PointInTime(config=lambda: self.config, vault=lambda: self.vault, restores=self.restores,
                                capture=self.capture, slot=self.slot)
        self._bind_continuous_metrics()
        self.drills = Drills(config=lambda: self.config, vault=lambda: self.vault, metrics=self.metrics,
                             records=DrillRecords(config.coordinator.state_dir / DRILLS_FILE),
                             restoring=lambda: self.restores.active() is not None)

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

    def _lister_of(self, vault: Vault) -> Lister:
        """The background listing of ``vault`` (a reload's new vault gets its own: the old one's may hang)."""
        return Lister(vault.refresh, LIST_EVERY, on_done=self._listed)

    def _listed(self) -> None:
        """The background listing ended: publish what it found, let the loop see it."""
        listing = self.vault.catalog.view()
        if listing.state == OK:
            self.pulls.publish_metrics(list(listing.entries))
        self._wake.set()

    def _ask_listing(self) -> Optional[tuple[int, float]]:
        """For an answer about the vault: ask for a new listing when the last result is older than
        LIST_FRESH. Returns (the generation to wait past, until when) when a listing runs that is worth
        waiting for, else None."""
        view = self.vault.catalog.view()
        if view.asking_since is not None or (stale(view, time.time(), LIST_FRESH) and self.lister.request()):
            return view.generation, time.monotonic() + LIST_WAIT
        return None

    def _answer_listing(self, asked: Optional[tuple[int, float]]) -> Listing:
        """The catalog to answer from: the asked-for listing if it came in time, else the last one (with its
        age and error)."""
        if asked is None:
            return self.vault.catalog.view()
        generation, until = asked
        return self.vault.catalog.wait_past(generation, max(0.0, until - time.monotonic()))

    def snapshots_report(self) -> dict[str, Any]:
        listing = self._answer_listing(self._ask_listing())
        return status.snapshots_report(listing, self.vault.location, time.time(), self._continuous(),
                                       self.drills.of_entries())

    def _continuous(self) -> dict[str, Any]:
        c = self.config.continuous
        return continuous_report(self.capture, self.vault, c.enabled, c.flush, time.time())

    def _survey(self) -> list[MemberView]:
        """Every agent's report, each waited for up to ``request_timeout`` (pulls, backups, the first survey)."""
        assert self.links is not None
        return self._count(self.links.survey(self.config.coordinator.request_timeout))

    def _quick_survey(self) -> list[MemberView]:
        """Every agent's report within about 1.5 s (``etcdguardctl status``): who did not answer is marked."""
        assert self.links is not None
        return self._count(self.links.quick_survey())

    def _count(self, views: list[MemberView]) -> list[MemberView]:
        self.metrics.members_reachable.set(sum(1 for v in views if v.reachable))
        return views

    # -- control requests ----------------------------------------------------
    def _require_links(self) -> MemberLinks:
        assert self.links is not None
        return self.links

    def _restore_changed(self) -> None:
        self.refresh_restore_metrics()
        self._wake.set()
        if self.restores.active() is None:
            self.prestage.wake()    # a restore ended: pre-staging picks up where it stopped

    def _bind_continuous_metrics(self) -> None:
        m, capture = self.metrics, self.capture
        m.continuous_enabled.set_function(lambda: 1 if self.config.continuous.enabled else 0)
        m.continuous_running.set_function(lambda: 1 if capture.state.running else 0)
        m.continuous_lag.set_function(lambda: capture.lag() if self.config.continuous.enabled else 0.0)
        m.continuous_last_revision.set_function(lambda: capture.state.written)
        m.continuous_segment_bytes.set_function(lambda: sum(s.size for s in self.vault.segments.catalog.view()))
        m.continuous_segments.set_function(lambda: len(self.vault.segments.catalog.view()))
        m.continuous_last_gap.set_function(lambda: max((s.info.first_ms / 1000 for s in
                                                        self.vault.segments.catalog.view() if s.info.gap), default=0))

    def _snapshot_for_capture(self, why: str) -> None:
        """Continuous backup needs a full snapshot now (a gap, a new cluster): one backup in a thread of its
        own, waiting for the slot like any backup; a second request while it runs joins it."""
        if self._capture_snapshot is not None and self._capture_snapshot.is_alive():
            return

        def work() -> None:
            log.info("continuous backup: taking a full snapshot now: %s", why)
            try:
                result = self.backup(None, lambda event: None, kind=SCHEDULED_KIND)
                log.info("continuous backup: full snapshot %s at revision %d is in the vault",
                         result["entry"]["sha256"][:12], result["entry"]["revision"])
            except EtcdguardError as exc:
                log.error("continuous backup: the full snapshot it needs failed: %s (the schedule tries again)", exc)

        self._capture_snapshot = threading.Thread(target=work, name="continuous-snapshot", daemon=True)
        self._capture_snapshot.start()

    def _prestage_changed(self) -> None:
        report = self.prestage.report()
        for member, state in report["members"].items():
            self.metrics.prestaged.labels(member=member).set(1 if state["holds_newest"] else 0)

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
            "snapshots": lambda args, emit: self.snapshots_report(),
            "backup": lambda args, emit: self.backup(_member_arg(args), emit),
            "restore": lambda args, emit: (self.pitr.command(args, emit) if is_point_request(args)
                                           else self.restores.command(args, emit)),
            "replace": self.members_ops.replace_command,
            "defrag": self.members_ops.defrag_command,
            "history": lambda args, emit: history(self.vault, args),
            "restores": lambda args, emit: status.restores_report(self.restores, self._survey()),
            "diagnose": lambda args, emit: self.diagnose(),
            "drill": self._drill,
            **{cmd: self._vault_command(cmd) for cmd in vault_commands.COMMANDS},
        }

    def _drill(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """``drill``: of a vault entry, of what the schedule drills, or of a point in time (built first)."""
        if is_point_request(args):
            if self.restores.active() is not None:
                raise UnsafeRefusal("refused: a cluster restore is running; drill after it ends")
            args = {"id": self.pitr.entry_for(args, emit).sha256}
        return self.drills.command(args, emit)

    def _vault_command(self, cmd: str) -> Callable[[dict[str, Any], Emit], Any]:
        return lambda args, emit: vault_commands.handle(self.vault, cmd, args)

    def backup(self, member: Optional[str], emit: Emit, kind: str = MANUAL) -> dict[str, Any]:
        """``etcdguardctl backup``: a snapshot on ``member`` (default: a healthy follower) into the vault.
        A copy that fails is retried by the schedule (policy.next_pull_due), as a failed pull is."""
        before = self.pulls.copies.view().last
        try:
            return self.pulls.backup(member, emit, kind)
        finally:
            if self.pulls.copies.view().last is not before:   # refusals before any copy change nothing
                self._reschedule()
            self._wake.set()   # the loop refreshes its status line and schedule
            self.prestage.wake()
            self.drills.wake()

    def _reschedule(self) -> None:
        """The next scheduled pull after the attempt just recorded."""
        with self._schedule_lock:
            self.next_due = next_pull_due(self.pulls.copies.view(), self.next_due, time.monotonic(),
                                          self.config.vault.interval, self._rng)

    def _retry_if_recovered(self) -> None:
        """A copy failed on the storage and the storage answers a listing again: retry it now, once."""
        failing = self.pulls.copies.view().failing
        recovered = self.vault.catalog.view().recovered_at
        if self._worker is None and recovered != self._retried_for and retry_now(failing, recovered):
            self._retried_for = recovered
            log.info("vault: the storage answers again; retrying the failed copy now")
            with self._schedule_lock:
                self.next_due = time.monotonic()

    def diagnose(self) -> dict[str, Any]:
        """``etcdguardctl diagnose``: one verdict from every agent's fresh report and the vault (diagnose/)."""
        active = self.restores.active()
        copies = self.pulls.copies.view()
        facts = gather(self._survey(), newest=self.vault.newest_cached(), interval=self.config.vault.interval,
                       failures=copies.failures, last_pull=copies.last.to_json() if copies.last else None,
                       operations=self.restores.records(), running=active[0] if active else None, now=time.time())
        return verdict_json(diagnose(facts), facts)

    def status_report(self) -> dict[str, Any]:
        """The reply to ``status``; the agents are asked while the vault lists (both bounded)."""
        asked = self._ask_listing()
        views = self._quick_survey()
        listing = self._answer_listing(asked)
        return status.status_report(
            views=views, vault=self.vault, listing=listing, config=self.config, restores=self.restores,
            busy=self.slot.doing, copies=self.pulls.copies.view(),
            next_pull_in=max(0.0, self.next_due - time.monotonic()) if self.next_due else None,
            prestage=self.prestage.report(), continuous=self._continuous(), drills=self.drills.report())

    def refresh_restore_metrics(self) -> None:
        records = self.restores.records()
        active = self.restores.active()
        self.metrics.restore_in_progress.set(1 if active else 0)
        self.metrics.restore_interrupted.set(sum(1 for r in records if r.state.value in status.WAITING))
        # the last restore's result and timings (a replacement or defragmentation is not a restore)
        ended = [r for r in records if r.state.value in ("done", "failed", "rolled-back") and r.plan.snapshot]
        if ended:
            last = summarize(ended[-1])
            self.metrics.restore_last_result.set(0 if last.state == "failed" else 1)
            for timing in last.phases:
                self.metrics.restore_phase_duration.labels(phase=timing.phase).set(timing.seconds)
            if last.downtime_seconds is not None:
                self.metrics.restore_downtime.set(last.downtime_seconds)

    # -- the scheduled pull ----------------------------------------------------
    def _start_pull(self) -> None:
        self._worker_before = self.pulls.copies.view().last

        def work() -> None:
            ok = False
            try:
                ok = self.pulls.pull_once()
            except Exception as exc:  # a bug must not kill the schedule; it is logged
                log.exception("vault pull: internal error")
                self.pulls.failed(SCHEDULED, "other", f"internal error: {exc!r} (see the daemon's log)")
            finally:
                self._worker_ok = ok
                self._wake.set()

        self._worker = threading.Thread(target=work, name="vault-pull", daemon=True)
        self._worker.start()

    def _finish_pull(self) -> None:
        assert self._worker is not None
        self._worker.join()
        self._worker = None
        if self.pulls.copies.view().last is not self._worker_before:
            self._reschedule()
            if self._worker_ok:
                self.prestage.wake()
                self.drills.wake()
            return
        now = time.monotonic()   # postponed (a backup or restore held the slot): nothing was attempted
        with self._schedule_lock:
            self.next_due = (schedule.after_success(now, self.config.vault.interval, self._rng) if self._worker_ok
                             else schedule.after_failure(now, self.config.vault.interval, 1))

    def status_line(self) -> str:
        active = self.restores.active()
        if active is not None:
            return f"restore {active[0]}: {active[1]}"
        doing = self.slot.doing
        if doing:
            return doing
        vault = status.vault_phrase(self.vault.catalog.view(), time.time())
        failures = self.pulls.copies.view().failures
        failing = f"; {failures} copy attempt(s) failed in a row" if failures else ""
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
        loaded = self._load_for_reload(self.config_path)
        if loaded is None:
            return
        config, links, vault, new_metrics = loaded
        self.lister.stop(0)   # a listing of the old vault that still runs ends on its own
        if config.coordinator.control_socket != self.config.coordinator.control_socket:
            log.warning("control_socket changed to %s: takes effect at the next restart",
                        config.coordinator.control_socket)
        if config.coordinator.insecure:
            log.warning("insecure = true: talking to the agents over plain TCP, unauthenticated and unencrypted")
        old_metrics = self.config.metrics.listen
        with self.slot.held("reload"):   # no long operation uses the old links or vault from here on
            old_links, self.links = self.links, links
            self.config = config
            self.vault = vault
        self.metrics.set_backend(config.vault.backend)
        if old_links is not None:
            old_links.close()
        if config.metrics.listen != old_metrics:
            self._replace_metrics_server(new_metrics)
        self.metrics.interval.set(config.vault.interval)
        self.metrics.members.set(len(config.members))
        self.lister = self._lister_of(vault)
        self.lister.start()
        self.drills.wake()
        if self.vault.catalog.wait_past(0, FIRST_LISTING).known:
            self.next_due = min(self.next_due, self._first_due())
        log.info("configuration reloaded from %s (%d members)", self.config_path, len(config.members))

    def _load_for_reload(self, path: Path) -> Optional[tuple[CoordinatorConfig, MemberLinks, Vault,
                                                             Optional[MetricsServer]]]:
        """The new configuration, its links, its prepared vault and (for a new address) its bound metrics
        server; None, logged, when any of them fails: the running configuration stays."""
        new_metrics: Optional[MetricsServer] = None
        try:
            config = load_coordinator_config(path)
            require_members(config)
            links = MemberLinks(config, self._factory(config))
            vault = open_vault(config, self.metrics.record_backend_failure)
            if vault.backend == "dir":   # a local directory: opened now; a bucket is opened by the lister
                vault.prepare()
            if config.metrics.listen != self.config.metrics.listen and config.metrics.listen:
                new_metrics = bind_replacement(self.metrics.registry, config.metrics.listen, self.metrics_server)
        except (EtcdguardError, OSError) as exc:
            log.error("reload failed, kept the running configuration: %s", exc)
            self.notifier.status(f"reload failed: {exc}")
            return None
        except Exception:   # a bug must not end the daemon that keeps the vault and runs restores
            log.exception("reload failed (internal error), kept the running configuration")
            return None
        return config, links, vault, new_metrics

    def _replace_metrics_server(self, new: Optional[MetricsServer]) -> None:
        """[metrics] listen changed: the old server stops, the one bound at the new address serves."""
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.metrics_server = new
        if new is not None:
            log.info("metrics on %s", new.url)

    # -- the loop ----------------------------------------------------------
    def run(self) -> int:
        require_members(self.config)
        if self.config.coordinator.insecure:
            log.warning("insecure = true: talking to the agents over plain TCP, unauthenticated and "
                        "unencrypted; anyone on the network can impersonate an agent")
        self.links = MemberLinks(self.config, self._factory(self.config))
        self.lister.start()   # opens and lists the vault; a bucket that does not answer is retried there
        self.vault.catalog.wait_past(0, FIRST_LISTING)
        self.restores.recover()
        self.refresh_restore_metrics()
        self.control = ControlServer(self.config.coordinator.control_socket, self.handle)
        self.control.start()
        self.prestage.start()
        self.capture.start()
        self.drills.start()
        try:
            self._start_metrics()
            return self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> int:
        views = self._survey()
        summary = cluster_summary(views)
        self.next_due = self._first_due()
        log.info("coordinator ready: %d/%d agents reachable, %d healthy, leader %s; vault %s (%s, "
                 "keep %d, every %s)", summary["reachable"], summary["members"], summary["healthy"],
                 summary["leader"] or "unknown", self.vault.location,
                 status.vault_phrase(self.vault.catalog.view(), time.time()), self.config.vault.keep,
                 format_duration(self.config.vault.interval))
        for v in views:
            if not v.reachable:
                log.warning("member %s: agent %s unreachable: %s", v.name, v.agent, v.error)
        self.notifier.ready(self.status_line())
        tick = min(STATUS_REFRESH, self.notifier.watchdog_interval or STATUS_REFRESH)
        while not self._stop:
            if self._worker is not None and not self._worker.is_alive():
                self._finish_pull()
            self._retry_if_recovered()
            if self._reload and self._worker is None:
                if self.slot.locked():
                    # A restore or backup holds the slot (a restore for minutes): the loop must keep
                    # answering the watchdog, so the reload waits until it is free.
                    if not self._reload_postponed:
                        log.info("SIGHUP: reload postponed until %s ends", self.slot.doing or "the long operation")
                        self._reload_postponed = True
                else:
                    self._reload_postponed = False
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
        self.lister.stop()
        self._restore_stop.set()   # a running restore stops at its next barrier, journaled as interrupted
        self.prestage.stop()
        self.capture.stop()
        self.drills.stop()
        if self.control is not None:
            self.control.stop()
        # A pull or an etcdguardctl backup may still run: give it time to finish cleanly.
        idle = self.slot.take("stopping", timeout=STOP_GRACE)
        if not idle:
            log.error("%s did not finish within %ss; its temp file is removed at the next start",
                      self.slot.doing or "a vault pull", STOP_GRACE)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.links is not None and idle:
            self.links.close()
        if idle:
            self.slot.release()
        log.info("coordinator stopped")
