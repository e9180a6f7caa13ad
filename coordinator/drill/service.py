"""Restore drills in the daemon: the schedule, `etcdguardctl drill`, and what status and the metrics show.

A drill runs in a thread of its own, one at a time (its own slot: a drill
never touches the cluster, so it does not hold the daemon's slot, and a
pull or a backup goes on beside it); while a cluster restore runs, a
scheduled drill waits and ``etcdguardctl drill`` is refused (the restore
needs the coordinator's disk and CPU). Each drill materializes the vault
entry (downloaded, decrypted, decompressed, its sha256 checked) and hands
the file to run.py; the result is counted in the metrics and kept in the
state directory (records.py) before the next one starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EtcdguardError, ToolError, UnsafeRefusal, UsageError
from etcdguard.common.base.slot import Slot
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.drill import policy
from etcdguard.coordinator.drill.checks import OTHER, TOOL, VAULT, DrillResult, Recorded, verdict
from etcdguard.coordinator.drill.records import DrillRecords
from etcdguard.coordinator.drill.run import DrillFailed, drill_file
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.scratch import scratch_binaries, scratch_dir
from etcdguard.coordinator.vault.entry import VaultEntry
from etcdguard.coordinator.vault.store import Vault

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any]], None]
RECHECK = 600.0      # seconds between looks when nothing is due or drills cannot run
POSTPONE = 60.0      # a scheduled drill due while a restore runs is looked at again after this


def _discard(_: Mapping[str, Any]) -> None:
    return None


class Drills:
    """The drill schedule and the ``drill`` command of one coordinator daemon."""

    def __init__(self, *, config: Callable[[], CoordinatorConfig], vault: Callable[[], Vault],
                 metrics: CoordinatorMetrics, records: DrillRecords, restoring: Callable[[], bool]) -> None:
        self._config = config
        self._vault = vault
        self.metrics = metrics
        self.records = records
        self._restoring = restoring
        self.slot = Slot()
        self.next_due: Optional[float] = None       # monotonic; None: not scheduled
        self.last_round_failed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.available = self.availability()
        if records.last is not None:
            metrics.record_drill_state(records.last_success_at, records.last.ok)

    # -- whether drills can run here ------------------------------------------------------
    def availability(self) -> policy.Availability:
        """Whether the schedule runs, here and now (the scratch binaries are looked for every time: one
        installed later is used without a restart)."""
        config = self._config()
        try:
            binaries = scratch_binaries(config)
        except ToolError as exc:
            found = policy.availability(config.drill, str(exc))
        else:
            found = policy.availability(config.drill, None, f"{binaries.etcd} and {binaries.tool.path}")
        self.metrics.drill_enabled.set(1 if found.wanted else 0)
        self.metrics.drill_interval.set(config.drill.interval)
        self.available = found
        return found

    # -- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        now = time.monotonic()
        self.next_due = policy.first_due(self.records.last_success_at, self._config().drill.interval or 1.0,
                                         time.time(), now)
        self._thread = threading.Thread(target=self._loop, name="drills", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look again now (a new snapshot in the vault, a reload)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self._tick()
            except Exception:   # the thread's outermost level: logged; the next look tries again
                log.exception("drills: internal error")
                wait = RECHECK
            self._wake.wait(wait)
            self._wake.clear()

    def _tick(self) -> float:
        """One look at the schedule: drill if due; how long to wait before the next look."""
        found = self.availability()
        if not found.scheduled or self.next_due is None:
            return RECHECK
        try:
            chosen = policy.choose(self._vault().list())
        except EtcdguardError as exc:
            log.warning("drills: the vault cannot be listed now (%s); trying again later", exc)
            return POSTPONE
        due = time.monotonic() >= self.next_due
        if not chosen or not (due or policy.drill_now(chosen, self.records.snapshot(), self.last_round_failed)):
            return max(1.0, min(RECHECK, self.next_due - time.monotonic())) if chosen else RECHECK
        if self._restoring():
            log.info("drills: a scheduled drill waits for the running restore")
            return POSTPONE
        if not self.slot.try_take("scheduled drill"):
            return POSTPONE
        try:
            results = self._round(chosen, _discard)
        finally:
            self.slot.release()
        self.last_round_failed = not all(r.ok for r in results)
        self.next_due = time.monotonic() + self._config().drill.interval
        return max(1.0, min(RECHECK, self._config().drill.interval))

    # -- etcdguardctl drill -----------------------------------------------------------------
    def command(self, args: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """``drill`` {id?}: drill that entry, or what the schedule drills; every result, and ``ok``."""
        ref = args.get("id")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise UsageError("drill: give a snapshot id (a sha256 prefix) or 'latest'")
        if self._restoring():
            raise UnsafeRefusal("refused: a cluster restore is running; drill after it ends")
        vault = self._vault()
        chosen = [vault.resolve(ref)] if ref else policy.choose(vault.list())
        if not chosen:
            raise UsageError(f"the vault ({vault.location}) holds no snapshot to drill yet (take one with "
                             "`etcdguardctl backup`)")

        def waiting(doing: str) -> None:
            emit({"message": f"waiting for the running drill to end ({doing})"})

        with self.slot.held("drill (etcdguardctl)", waiting=waiting):
            results = self._round(chosen, emit)
        return {"drills": [r.to_json() for r in results], "ok": all(r.ok for r in results)}

    # -- one round ---------------------------------------------------------------------------
    def _round(self, chosen: Sequence[VaultEntry], emit: Emit) -> list[DrillResult]:
        results = []
        for entry in chosen:
            result = self.drill(entry, emit)
            results.append(result)
            emit({"message": result.message, "sha256": result.sha256, "ok": result.ok})
        self.wake()   # the schedule sees the new results
        return results

    def drill(self, entry: VaultEntry, emit: Emit = _discard) -> DrillResult:
        """Drill one vault entry; the result is counted, kept and logged before it is returned."""
        started, clock = time.time(), time.monotonic()

        def phase(what: str) -> None:
            self.slot.update(f"drill of {entry.sha256[:12]}: {what}")
            emit({"stage": "drill", "sha256": entry.sha256, "message": f"{entry.sha256[:12]}: {what}"})

        checks: tuple[Any, ...] = ()
        cleanup = ""
        try:
            ok, reason, message, checks, cleanup = self._attempt(entry, phase)
        except DrillFailed as exc:
            ok, reason, message = False, exc.reason, str(exc)
        result = DrillResult(sha256=entry.sha256, kind=entry.kind, revision=entry.revision, started_at=started,
                             seconds=round(time.monotonic() - clock, 3), ok=ok, reason=reason, message=message,
                             checks=checks, cleanup=cleanup,
                             unchecked=tuple(c.name for c in checks if c.ok is None))
        self._count(result)
        return result

    def _attempt(self, entry: VaultEntry, phase: Callable[[str], None]) -> tuple[bool, Optional[str], str,
                                                                                  tuple[Any, ...], str]:
        config = self._config()
        try:
            binaries = scratch_binaries(config)
        except ToolError as exc:
            raise DrillFailed(TOOL, f"no drill of {entry.sha256[:12]}: {exc}") from None
        phase(f"reading the vault copy ({format_bytes(entry.stored_size or entry.size)}"
              f"{', compressed' if entry.compression else ''}{', encrypted' if entry.encrypted else ''})")
        try:
            with self._vault().materialize(entry) as path:
                outcome = drill_file(binaries, path, Recorded.of(entry), scratch_dir(config),
                                     sample=config.drill.sample_keys, phase=phase)
        except DrillFailed:
            raise
        except (EtcdguardError, OSError) as exc:
            raise DrillFailed(VAULT, f"the vault copy of {entry.sha256[:12]} could not be read back as the snapshot "
                                     f"recorded: {' '.join(str(exc).split())}") from None
        ok, reason, message = verdict(entry.sha256, outcome.checks)
        return ok, reason, message, outcome.checks, outcome.cleanup

    def _count(self, result: DrillResult) -> None:
        self.records.record(result)
        self.metrics.record_drill(result.ok, result.reason or OTHER, result.seconds, self.records.last_success_at)
        took = format_duration(result.seconds)
        if result.ok:
            log.info("drill: %s (%s)", result.message, took)
        else:
            log.error("drill FAILED (%s): %s (%s)", result.reason, result.message, took)

    # -- what status shows ------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The drills' part of ``status``."""
        config = self._config()
        found = self.available
        last = self.records.last
        due = self.next_due
        return {
            "enabled": found.wanted, "runnable": found.runnable, "state": found.sentence,
            "interval_seconds": config.drill.interval,
            "next_in_seconds": max(0.0, due - time.monotonic()) if due is not None and found.scheduled else None,
            "running": self.slot.doing,
            "last": last.to_json() if last else None,
            "last_success_at": self.records.last_success_at,
        }

    def of_entries(self) -> dict[str, dict[str, Any]]:
        """Each drilled entry's last drill and when it was last proven (``snapshots``)."""
        return {sha: e.to_json() for sha, e in self.records.snapshot().items()}
