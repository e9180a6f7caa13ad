"""Getting snapshots into the vault: ``etcdguardctl backup``, the scheduled pull, the node bundle, retention.

The decisions are pure functions over the agents' reports in
vault/policy.py (``choose_pull``, ``choose_backup_member``), each returning
what to do and one sentence saying why; this module carries them out: ask an
agent for a snapshot (``snapshot.take``), copy it into the vault through a
dedicated client (verified end to end), copy the node bundle beside it, then
apply retention and refresh the vault's metrics.

Every entry point runs in the daemon's single slot (common/base/slot.py), so
a pull, a backup and a restore never overlap, and the slot's label says what
runs now (``status``, systemd's STATUS= line). The config, the links and the
vault are read through callables because a reload replaces them (under the
slot, so they never change under a running pull).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base import fsutil, schedule
from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EtcdguardError, SnapshotError, UnsafeRefusal, UsageError
from etcdguard.common.base.polling import Deadline, PollTimeout, poll_until
from etcdguard.common.base.slot import Slot
from etcdguard.common.wire.protocol import BUSY, RemoteError
from etcdguard.coordinator.agents.links import AgentLink, MemberLinks, read_report
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.metrics import CoordinatorMetrics
from etcdguard.coordinator.vault.attempts import BACKUP, SCHEDULED, CopyRecord
from etcdguard.coordinator.vault.entry import MANUAL, Incoming, VaultEntry
from etcdguard.coordinator.vault.entry import SCHEDULED as SCHEDULED_KIND
from etcdguard.coordinator.vault.policy import choose_backup_member, choose_pull, failure_reason
from etcdguard.coordinator.vault.store import Vault, VaultBackendError

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any]], None]

BUSY_POLL = 2.0           # seconds between snapshot.take attempts while the agent takes one of its own
PROGRESS_EVERY = 0.25     # seconds between progress lines to a control client
MAX_BUNDLE = 256 << 20    # a bundle is certificates and manifests: anything near this is not one


def fresh_as_of(newest: float, confirmed: Optional[float], wall_now: float) -> float:
    """Pure: how fresh the vault's data is: its newest snapshot's stamp or a later confirmation that a
    member holds the same data; a stamp from the future (a clock stepped back) counts only when no
    other is known, so it cannot hold the vault's age at 0."""
    stamps = [t for t in (newest, confirmed) if t is not None]
    sane = [t for t in stamps if t <= wall_now + schedule.CLOCK_TOLERANCE]
    return max(sane) if sane else max(stamps)


def newest_revisions(entries: Sequence[VaultEntry]) -> dict[str, int]:
    """Pure: the highest revision the vault holds of each cluster."""
    revisions: dict[str, int] = {}
    for e in entries:
        revisions[e.cluster_id] = max(revisions.get(e.cluster_id, e.revision), e.revision)
    return revisions


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


class VaultPulls:
    """Takes snapshots on the agents and pulls them into the vault, one at a time in the daemon's slot.

    ``survey`` asks every agent for its report (the daemon's, which also
    records reachability); ``stopping`` says the daemon is shutting down, so a
    wait for a busy agent ends. ``copies`` is how every pull and backup went
    (attempts.py): what ``etcdguardctl status`` shows and the retries follow;
    a failure is counted (``etcdguard_vault_failures_total``) where it is
    recorded, with the same reason.
    """

    def __init__(self, *, config: Callable[[], CoordinatorConfig], links: Callable[[], MemberLinks],
                 vault: Callable[[], Vault], metrics: CoordinatorMetrics, slot: Slot,
                 survey: Callable[[], list[MemberView]], stopping: Callable[[], bool] = lambda: False) -> None:
        self._config = config
        self._links = links
        self._vault = vault
        self.metrics = metrics
        self.slot = slot
        self.survey = survey
        self._stopping = stopping
        self.copies = CopyRecord()

    @property
    def last_pull(self) -> Optional[dict[str, Any]]:
        """What the last pull or backup did (``status``'s ``last_pull``)."""
        last = self.copies.view().last
        return last.to_json() if last else None

    def failed(self, kind: str, reason: str, message: str, member: Optional[str] = None) -> None:
        """A copy failed: counted in the metric and recorded for status and the retry, with one reason."""
        self.metrics.record_failure(reason)
        self.copies.failed(kind, reason, message, member)

    # -- metrics -------------------------------------------------------------
    def refresh_metrics(self) -> list[VaultEntry]:
        """List the vault and publish its size and freshness; an unreadable vault is logged (and empty)."""
        try:
            entries = self._vault().list()
        except VaultBackendError as exc:
            log.error("vault: %s", exc)
            return []
        self.publish_metrics(entries)
        return entries

    def publish_metrics(self, entries: list[VaultEntry]) -> None:
        """The vault's size and freshness from a listing of it (newest first)."""
        vault = self._vault()
        self.metrics.retained.set(len(entries))
        self.metrics.bytes.set(sum(e.size for e in entries))
        self.metrics.stored_bytes.set(sum(e.stored_size or e.size for e in entries))
        self.metrics.record_vault([e.created_unix for e in entries])
        newest = entries[0] if entries else None   # by revision, whatever the clocks stamped
        self.metrics.record_newest(fresh_as_of(newest.created_unix, vault.fresh_as_of, time.time())
                                   if newest else None, newest.size if newest else 0, newest.revision if newest else 0)

    # -- etcdguardctl backup ---------------------------------------------------
    def backup(self, member: Optional[str], emit: Emit, kind: str = MANUAL) -> dict[str, Any]:
        """Take a snapshot on ``member`` (default: a healthy follower) and pull it into the vault, as an entry of
        ``kind`` (``manual``: etcdguardctl backup; ``scheduled``: one the coordinator decided on itself)."""
        config = self._config()
        if member is not None and config.member(member) is None:
            raise UsageError(f"no member named {member!r} in the configuration "
                             f"(members: {', '.join(m.name for m in config.members)})")

        def waiting(doing: str) -> None:
            emit({"stage": "wait", "message": f"waiting for the running operation: {doing}"})

        with self.slot.held("backup: choosing a member", waiting=waiting):
            view, why = choose_backup_member(self.survey(), member)
            log.info("backup requested: %s", why)
            emit({"stage": "take", "member": view.name, "message": f"taking a snapshot on {why}"})
            self.slot.update(f"backup: taking a snapshot on {view.name}")
            started = time.monotonic()
            try:
                meta = self.take(view.name, emit)
                entry, pulled = self.pull(view.name, meta, emit, kind)
            except EtcdguardError as exc:
                self.failed(BACKUP, failure_reason(exc), f"backup on {view.name}: {exc}", view.name)
                raise
            took = time.monotonic() - started
            self.copies.succeeded(BACKUP, f"backup on {view.name}", view.name, entry.sha256)
            return {"member": view.name, "why": why, "snapshot": dict(meta), "entry": entry.to_json(),
                    "pulled": pulled, "duration_seconds": took}

    # -- the scheduled pull ----------------------------------------------------
    def pull_once(self) -> bool:
        """One scheduled pull (in the daemon's worker thread). True when the vault is up to date."""
        if not self.slot.try_take("vault pull: asking the agents"):
            log.info("vault pull postponed: %s", self.slot.doing)
            return True
        try:
            return self._scheduled_pull()
        finally:
            self.slot.release()

    def _scheduled_pull(self) -> bool:
        """One scheduled pull, recorded in ``copies``; True when the vault is up to date."""
        views = self.survey()
        vault = self._vault()
        try:
            entries = vault.list()
        except VaultBackendError as exc:
            log.error("vault pull: %s", exc)
            self.failed(SCHEDULED, "backend", str(exc))
            return False
        choice = choose_pull(views, lambda sha: vault.has(sha) is not None, newest_revisions(entries),
                             self._config().vault.interval,
                             held={(e.cluster_id, e.revision) for e in entries if e.revision_exact})
        log.info("vault: %s", choice.sentence)
        if choice.fresh_as_of is not None:
            vault.confirm_current(choice.fresh_as_of)
            self.refresh_metrics()
        if choice.member is None or choice.snapshot is None:
            if choice.failure is not None:
                self.failed(SCHEDULED, choice.failure, choice.sentence)
                return False
            self.copies.succeeded(SCHEDULED, choice.sentence)
            return True
        try:
            entry, _ = self.pull(choice.member, choice.snapshot.to_json(), _discard)
        except EtcdguardError as exc:
            reason = failure_reason(exc)
            log.error("vault pull from %s failed (%s): %s", choice.member, reason, exc)
            self.failed(SCHEDULED, reason, str(exc), choice.member)
            return False
        self.copies.succeeded(SCHEDULED, choice.sentence, choice.member, entry.sha256)
        return True

    # -- take ------------------------------------------------------------------
    def take(self, name: str, emit: Emit) -> Mapping[str, Any]:
        """snapshot.take on one agent; waits while the agent is busy with its own snapshot."""
        config = self._config()
        deadline = Deadline(config.vault.timeout)
        client = self._links().dedicated(name)

        def attempt() -> Optional[tuple[Mapping[str, Any]]]:
            """(the snapshot,), or None while the agent is busy with a snapshot of its own."""
            if deadline.expired:
                return None
            try:
                result = client.call("snapshot.take", {}, timeout=deadline.remaining(), retries=0)
            except RemoteError as exc:
                if exc.code != BUSY or self._stopping():
                    raise
                self._wait_out_own_snapshot(name, client, exc, emit)
                return None
            snap = result.get("snapshot")
            if not isinstance(snap, Mapping):
                raise SnapshotError(f"member {name}: snapshot.take answered without a snapshot")
            return (snap,)

        try:
            return poll_until(attempt, deadline, interval=BUSY_POLL, what=f"a snapshot of member {name}")[0]
        except PollTimeout:
            limit = format_duration(config.vault.timeout)
            raise SnapshotError(f"member {name}: no snapshot within {limit} ([vault] timeout)") from None
        finally:
            client.close()

    def _wait_out_own_snapshot(self, name: str, client: AgentLink, busy: RemoteError, emit: Emit) -> None:
        """The agent said busy: wait out a snapshot it takes on its own; never wait on a restore."""
        view = read_report(name, "", client.status(timeout=self._config().coordinator.request_timeout))
        restore = view.report.restore if view.report is not None else None
        doing = view.busy or ""
        if restore is None or restore.locked or restore.open_ops or doing.startswith("restore"):
            raise UnsafeRefusal(f"refused: a restore operation is in progress on member {name} "
                                f"({busy.message})") from None
        emit({"stage": "wait", "member": name, "message": f"member {name} is busy ({busy.message}); waiting"})

    # -- pull ------------------------------------------------------------------
    def pull(self, name: str, meta: Mapping[str, Any], emit: Emit,
             kind: str = SCHEDULED_KIND) -> tuple[VaultEntry, bool]:
        """Fetch one catalogued snapshot of ``name`` into the vault (unless it is there), then its bundle.

        ``kind`` is stored with a new entry (entry.KINDS); one the vault already holds keeps its own."""
        try:
            incoming = Incoming.from_agent(name, dict(meta), kind)
        except ValueError as exc:
            raise SnapshotError(str(exc)) from None
        vault = self._vault()
        if vault.has(incoming.sha256):
            emit({"stage": "done", "member": name, "message": f"the vault already has {incoming.sha256[:12]}"})
        else:
            dup = vault.holds_same(incoming)
            if dup is not None:
                emit({"stage": "done", "member": name, "message": (
                    f"the vault already holds revision {incoming.revision} of cluster {incoming.cluster_id} "
                    f"({dup.sha256[:12]}): nothing new to copy")})
                self.refresh_metrics()
                return dup, False
        self.slot.update(f"pulling {incoming.original_name} from {name}")
        started = time.monotonic()
        entry, pulled = vault.pull(incoming, self._fetcher(name, incoming, emit))
        if pulled and incoming.bundle:
            entry = pull_bundle(vault, self._links().dedicated(name), incoming, entry)
        if pulled:
            took = time.monotonic() - started
            self.metrics.duration.observe(took)
            log.info("vault: pulled %s from %s: %s in %s (%s/s)", incoming.original_name, name,
                     format_bytes(incoming.size), format_duration(took),
                     format_bytes(incoming.size / took if took > 0 else 0))
        self.retention()
        return entry, pulled

    def _fetcher(self, name: str, incoming: Incoming, emit: Emit) -> Callable[[Path], Optional[str]]:
        """What the vault calls to write the snapshot at its temp path: a transfer on a client of its own."""
        progress = Throttled(emit, stage="fetch", member=name, name=incoming.original_name)
        links = self._links()
        timeout = max(30.0, self._config().coordinator.request_timeout)

        def track(done: int, total: int) -> None:
            self.slot.update(f"pulling {incoming.original_name} from {name}: "
                             f"{format_bytes(done)} of {format_bytes(total)}")
            progress(done, total)

        level = self._vault().zstd_level

        def fetch(dest: Path) -> str:
            client = links.dedicated(name)
            try:
                # compressed: the agent compresses each chunk as it sends it, and the vault stores the frames
                return client.fetch_snapshot(incoming.original_name, dest, expected_sha256=incoming.sha256,
                                             expected_size=incoming.size, progress=track, timeout=timeout,
                                             zstd_level=level)
            finally:
                client.close()

        return fetch

    def retention(self) -> None:
        self._vault().apply_retention(self._config().vault.keep)
        self.refresh_metrics()


def pull_bundle(vault: Vault, client: AgentLink, incoming: Incoming, entry: VaultEntry,
                timeout: float = 30.0) -> VaultEntry:
    """Copy the agent's encrypted node bundle of ``incoming`` beside ``entry``; a failure is logged, not raised.

    The snapshot is already safe in the vault; a missing bundle shows in
    ``etcdguardctl snapshots`` and is tried again with the next snapshot.
    """
    temp = fsutil.temp_path(vault.work_dir, "bundle")
    try:
        fsutil.ensure_private_dir(vault.work_dir)
        client.fetch_bundle(incoming.original_name, temp, max_size=MAX_BUNDLE, timeout=timeout)
        return vault.add_bundle(entry, temp)
    except (EtcdguardError, OSError) as exc:
        log.warning("vault: the node bundle of %s from member %s was not copied: %s", incoming.original_name,
                    incoming.source_member, exc)
        return entry
    finally:
        client.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
