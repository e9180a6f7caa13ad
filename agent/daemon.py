"""The agent daemon: scheduled snapshots, metrics, systemd notifications.

Signal handlers only set flags and wake the loop; the loop decides. A snapshot
runs in a worker thread so the loop keeps answering the watchdog and can cancel
it on SIGTERM (its temp file is removed, the catalog stays unchanged).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent import certs
from etcdguard.agent.config import AgentConfig, load_agent_config
from etcdguard.agent.discovery.discover import discover
from etcdguard.agent.etcd.health import HealthProbe
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.restore.records import OperationStore, restore_active
from etcdguard.agent.snapshots.backup import SCHEDULED, BackupRunner
from etcdguard.common.base import schedule
from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.base.notify import Notifier
from etcdguard.common.base.signals import SignalFlags
from etcdguard.common.etcd.client import Cancellation, EtcdClient
from etcdguard.common.metrics_server import MetricsServer, bind_replacement
from etcdguard.common.ops.states import ACTIVE, FINAL, OpState
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.snapshot.tools import untested_version
from etcdguard.common.wire.report import CertificateInfo

log = logging.getLogger(__name__)

STATUS_REFRESH = 15.0
STOP_GRACE = 30.0


class AgentDaemon(SignalFlags):
    def __init__(self, config_path: Optional[Path], config: AgentConfig, root: Path = Path("/")) -> None:
        super().__init__()
        self.config_path = config_path
        self.config = config
        self.root = root
        self.notifier = Notifier()
        self.metrics = AgentMetrics()
        self.metrics.interval.set(config.backup.interval)
        self._rng = random.Random()
        self._worker: Optional[threading.Thread] = None
        self._worker_result: Optional[BaseException | SnapshotMeta] = None
        self._progress = 0
        self._restore_note = ""
        self._damaged: dict[str, str] = {}   # operation -> why its record cannot be read (logged once)
        self._failures = 0
        self._cancel: Optional[Cancellation] = None
        self.runner: Optional[BackupRunner] = None
        self.metrics_server: Optional[MetricsServer] = None
        self.services: list[Any] = []   # extra long-lived parts (the control server), each with start/stop
        self.on_ready: Optional[Callable[[], None]] = None
        # etcdguard_etcd_up between snapshots (agent/etcd/health.py)
        self.health = HealthProbe(lambda: (self.runner.member, self.config.etcd.dial_timeout) if self.runner else None,
                                  lambda up: self.metrics.etcd_up.set(1 if up else 0),
                                  status=lambda st: self.metrics.record_db(st.db_size if st else None,
                                                                           st.db_size_in_use if st else None))
        self.metrics.certificates.source = self._certificates

    def _certificates(self) -> Sequence[CertificateInfo]:
        """The certificates etcd and kube-apiserver use here, for ``etcdguard_certificate_expiry_seconds``."""
        runner = self.runner
        return certs.current(runner.config, runner.member) if runner is not None else ()

    def _stop_requested(self, reason: str) -> None:
        if self._cancel is not None:
            self._cancel.cancel(reason)

    # -- setup -------------------------------------------------------------
    def _build(self, config: AgentConfig) -> BackupRunner:
        member = discover(config, self.root)
        runner = BackupRunner(config, member, self.metrics)
        runner.store.prepare()
        runner.refresh_store_metrics()
        return runner

    def _health_check(self, runner: BackupRunner) -> str:
        try:
            with EtcdClient(runner.member.endpoint, runner.member.tls, self.config.etcd.dial_timeout) as c:
                st = c.status()
            self.metrics.etcd_up.set(1 if st.healthy else 0)
            self.metrics.record_db(st.db_size, st.db_size_in_use)
            untested = untested_version(st.version)
            if untested is not None:
                log.warning("%s at %s", untested, runner.member.endpoint)
            return f"etcd {st.version} at {runner.member.endpoint}, revision {st.revision}"
        except EtcdguardError as exc:
            self.metrics.etcd_up.set(0)
            log.warning("first health check failed: %s", exc)
            return f"etcd at {runner.member.endpoint} not answering"

    def _start_metrics(self) -> None:
        if self.config.metrics.listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics.listen)
            self.metrics_server.start()
            log.info("metrics on %s", self.metrics_server.url)

    # -- the loop ----------------------------------------------------------
    def _start_backup(self, runner: BackupRunner) -> None:
        cancel = Cancellation()
        self._cancel = cancel
        self._progress = 0

        def progress(n: int) -> None:
            self._progress = n

        def work() -> None:
            try:
                self._worker_result = runner.run_once(progress=progress, cancel=cancel, label=SCHEDULED)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
                self._worker_result = exc
            finally:
                self._wake.set()

        self._worker_result = None
        self._worker = threading.Thread(target=work, name="snapshot", daemon=True)
        self._worker.start()

    def _finish_backup(self) -> float:
        """Log the worker's outcome; return when the next snapshot is due."""
        assert self._worker is not None
        self._worker.join()
        self._worker = None
        self._cancel = None
        now = time.monotonic()
        result = self._worker_result
        interval = self.config.backup.interval
        if isinstance(result, SnapshotMeta):
            self._failures = 0
            return schedule.after_success(now, interval, self._rng)
        self._failures += 1
        log.error("snapshot failed (%d in a row): %s", self._failures, result)
        return schedule.after_failure(now, interval, self._failures)

    def status_line(self, runner: BackupRunner, next_due: float) -> str:
        if self._worker is not None:
            return f"taking snapshot: {format_bytes(self._progress)} so far"
        try:
            newest = runner.store.newest()
        except EtcdguardError as exc:
            return f"{self._restore_note}{exc}"
        last = "no snapshot yet" if newest is None else (
            f"last snapshot {format_duration(max(0.0, time.time() - newest.created_unix))} ago, "
            f"{format_bytes(newest.size)}, revision {newest.revision}")
        failing = f"; {self._failures} failed in a row" if self._failures else ""
        return (f"{self._restore_note}{last}{failing}; "
                f"next in {format_duration(max(0.0, next_due - time.monotonic()))}")

    def _do_reload(self) -> Optional[BackupRunner]:
        """Apply the config file again, or keep everything as it runs: a bad file must not stop backups."""
        self._reload = False
        if self.config_path is None:
            log.info("SIGHUP: no config file to reload")
            return None
        self.notifier.reloading()
        new_metrics: Optional[MetricsServer] = None
        try:
            config = load_agent_config(self.config_path)
            runner = self._build(config)
            if config.metrics.listen != self.config.metrics.listen and config.metrics.listen:
                new_metrics = bind_replacement(self.metrics.registry, config.metrics.listen, self.metrics_server)
        except (EtcdguardError, OSError) as exc:
            log.error("reload failed, kept the running configuration: %s", exc)
            self.notifier.status(f"reload failed: {exc}")
            return None
        except Exception:   # a bug must not end the daemon that takes the backups
            log.exception("reload failed (internal error), kept the running configuration")
            return None
        if config.metrics.listen != self.config.metrics.listen:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.metrics_server = new_metrics
            if new_metrics is not None:
                log.info("metrics on %s", new_metrics.url)
        self.config = config
        self.metrics.interval.set(config.backup.interval)
        log.info("configuration reloaded from %s", self.config_path)
        return runner

    def run(self) -> int:
        runner = self._build(self.config)
        self.runner = runner
        self._start_metrics()
        for service in self.services:
            service.start()
        health = self._health_check(runner)
        self.health.start()
        next_due = self._first_due(runner)
        log.info("agent ready: member %s, %s, store %s, every %s, keep %d", runner.member.name, health,
                 runner.store.dir, format_duration(self.config.backup.interval), self.config.backup.keep)
        self.notifier.ready(self.status_line(runner, next_due))
        if self.on_ready is not None:
            self.on_ready()
        tick = min(STATUS_REFRESH, self.notifier.watchdog_interval or STATUS_REFRESH)
        try:
            while not self._stop:
                if self._worker is not None and not self._worker.is_alive():
                    next_due = self._finish_backup()
                if self._reload and self._worker is None:
                    new = self._do_reload()
                    if new is not None:
                        runner = self.runner = new
                        next_due = min(next_due, self._first_due(runner))
                restoring = self._refresh_restore_metrics()
                if self._worker is None and time.monotonic() >= next_due and not self._stop:
                    if restoring:
                        log.info("a restore is running on this node%s; backup postponed",
                                 " or its record cannot be read" if self._damaged else "")
                        next_due = time.monotonic() + STATUS_REFRESH
                    else:
                        self._start_backup(runner)
                self.notifier.watchdog()
                self.notifier.status(self.status_line(runner, next_due))
                wait = tick if self._worker is not None else min(tick, max(0.0, next_due - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            self._shutdown()
        return 0

    def _first_due(self, runner: BackupRunner) -> float:
        """When the first snapshot is due, on the monotonic clock; at once when the newest one is stamped
        in the future (its age is unknown) or the store cannot be read."""
        try:
            newest = runner.store.newest()
        except EtcdguardError as exc:
            log.error("%s", exc)
            newest = None
        age = schedule.age_of(newest.created_unix if newest else None, time.time())
        if newest is not None and age is None:
            log.warning("the newest snapshot %s is stamped %s in the future: the clock was stepped back since it "
                        "was taken; taking one now", newest.name, format_duration(newest.created_unix - time.time()))
        return schedule.first_due_monotonic(age, self.config.backup.interval, time.monotonic())

    def _refresh_restore_metrics(self) -> bool:
        """Restore state comes from the operation records on disk (restores run in other processes).

        True while backups must wait: a restore runs, or a record cannot be read (it may be one),
        or the state dir itself cannot be read.
        """
        try:
            restoring = restore_active(self.config.state.dir)
            ops = OperationStore(self.config.state.dir)
            summaries = ops.summaries()
        except (OSError, EtcdguardError) as exc:
            self._restore_note = "restore records unreadable; "
            log.error("%s; backups wait until they can be read", exc)
            return True
        damaged = {s.op: str(s.error) for s in summaries if s.state is OpState.DAMAGED}
        for op_id, why in damaged.items():
            if op_id not in self._damaged:
                log.error("restore operation %s needs attention: %s", op_id, why)
        for op_id in set(self._damaged) - set(damaged):
            log.info("restore operation %s can be read again (or is gone)", op_id)
        self._damaged = damaged
        self.metrics.records_damaged.set(len(damaged))
        self.metrics.restore_in_progress.set(1 if restoring else 0)
        ended = [s.state for s in summaries if s.state in FINAL]
        if ended:
            self.metrics.restore_last_result.set(1 if ended[-1] in (OpState.DONE, OpState.ROLLED_BACK) else 0)
        self._restore_note = "".join(f"restore record {op_id} damaged, needs attention; " for op_id in damaged)
        for s in summaries:
            if s.state in ACTIVE:
                tail = ops.get(s.op).journal_tail(1) or [{}]
                event = " ".join(str(tail[0].get(k, "")) for k in ("step", "status")).strip()
                self._restore_note += f"restore {s.op} {s.state.value} ({event or 'started'}); "
        return restoring

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self._worker is not None:
            if self._cancel is not None:
                self._cancel.cancel("agent stopping")
            self._worker.join(STOP_GRACE)
            if self._worker.is_alive():
                log.error("snapshot worker did not stop within %ss", STOP_GRACE)
            elif isinstance(self._worker_result, BaseException):
                log.info("in-flight snapshot aborted: %s", self._worker_result)
        self.health.stop()
        for service in reversed(self.services):
            service.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("agent stopped")
