"""``etcdguardctl restore --to-revision N | --to-time T``: build the point, store it, restore the cluster to it.

Inside the daemon, like every restore. The plan (pitr/plan.py over
window.py) is checked first together with the ordinary cluster restore's
plan for the snapshot to be built, so a restore that would be refused is
refused before minutes of replay. Then, holding the daemon's slot (no pull
or backup overlaps it), the build (build.py) restores the base snapshot into
a scratch etcd on this host ([scratch]), replays the segments up to the
point, snapshots it and proves it restorable at exactly that revision; the
file goes into the vault as a pinned ``point-in-time`` entry (derived from
the base and the segments, its pin says which), and the ordinary cluster
restore runs on it: the same plan, stage, prepare, fence, swap, verify and
rollback as ``restore SNAPSHOT``. A point the vault already holds (an
earlier build, or a full snapshot at exactly that revision) is not built
again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.durations import format_duration, iso_utc
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.base.slot import Slot
from etcdguard.common.capture.segment import Segment
from etcdguard.common.snapshot.integrity import digest_file
from etcdguard.common.wire.typed import to_json
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.continuous.capture import Capture
from etcdguard.coordinator.pitr.build import Built, build
from etcdguard.coordinator.pitr.plan import PointPlan
from etcdguard.coordinator.pitr.scan import count_replay
from etcdguard.coordinator.pitr.window import choose, gaps, revision_at_time, spans
from etcdguard.coordinator.restore.service import RestoreService
from etcdguard.coordinator.scratch import scratch_binaries, scratch_dir
from etcdguard.coordinator.vault.entry import POINT_IN_TIME, Incoming, VaultEntry
from etcdguard.coordinator.vault.store import Vault

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any]], None]
PHASE = "point-in-time"


def _int(args: Mapping[str, Any], key: str) -> Optional[int]:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"restore: {key!r} must be a revision (a whole number >= 0)")
    return value


def _time(args: Mapping[str, Any], key: str) -> Optional[float]:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"restore: {key!r} must be unix seconds")
    return float(value)


def is_point_request(args: Mapping[str, Any]) -> bool:
    return args.get("to_revision") is not None or args.get("to_time") is not None


class PointInTime:
    def __init__(self, *, config: Callable[[], CoordinatorConfig], vault: Callable[[], Vault],
                 restores: RestoreService, capture: Capture, slot: Slot) -> None:
        self._config = config
        self._vault = vault
        self.restores = restores
        self.capture = capture
        self.slot = slot

    # -- the point ---------------------------------------------------------------
    def point(self, args: Mapping[str, Any]) -> PointPlan:
        """The plan of the point ``args`` name (``to_revision`` or ``to_time``); PointError naming the window."""
        revision, moment = _int(args, "to_revision"), _time(args, "to_time")
        if (revision is None) == (moment is None):
            raise UsageError("restore: give exactly one of --to-revision N and --to-time T")
        vault = self._vault()
        entries = list(vault.catalog.view().entries)
        segments = vault.segments.catalog.view()
        live = self.capture.state.cluster_id or None
        cluster: Optional[str] = None
        if moment is not None:
            cluster, revision = revision_at_time(entries, segments, moment, vault.segments.read,
                                                 caught_up_unix=self.capture.sync.caught_up_at, live_cluster=live)
        assert revision is not None
        choice = choose(entries, segments, revision, cluster)
        reuse = self._held(entries, choice.span.cluster_id, revision)
        read = [vault.segments.read(s) for s in choice.segments] if reuse is None else []
        count = count_replay(read, choice.base.revision, revision)
        at = _time_of(read, revision)
        return PointPlan(choice, count, at, moment, tuple(spans(entries, segments)), tuple(gaps(segments)),
                         reuse.sha256 if reuse else None)

    @staticmethod
    def _held(entries: list[VaultEntry], cluster: str, revision: int) -> Optional[VaultEntry]:
        """A vault entry holding exactly this point already (an earlier build, or a full snapshot)."""
        for e in entries:
            if e.cluster_id == cluster and e.revision == revision and e.revision_exact:
                return e
        return None

    # -- the command -------------------------------------------------------------
    def command(self, args: Mapping[str, Any], emit: Emit) -> Any:
        mode = args.get("mode")
        if mode not in ("plan", "run"):
            raise UsageError("--to-revision and --to-time go with --plan or --yes")
        if args.get("plan_id") is not None:
            raise UsageError("--plan-id is not for a point-in-time restore: its snapshot is built after the plan")
        point = self.point(args)
        restore_plan = self.restores.plan_snapshot(point.snapshot_ref(), None, force=bool(args.get("force")),
                                                   overrides=tuple(args.get("overrides") or ()))
        if mode == "plan":
            return {**restore_plan.to_json(), "point_in_time": point.to_json()}
        if restore_plan.blocking:
            reasons = "\n".join(f"  - {(r.member + ': ') if r.member else ''}{r.message}"
                                for r in restore_plan.blocking)
            raise UnsafeRefusal(f"point-in-time restore refused, nothing was built or changed:\n{reasons}")
        entry, built = self._entry(point, emit)
        plan = self.restores.plan(entry.sha256, force=bool(args.get("force")),
                                  overrides=tuple(args.get("overrides") or ()))
        emit({"phase": PHASE, "message": f"restoring the cluster to revision {point.revision} from "
                                          f"{entry.sha256[:12]}"})
        until = args.get("until")
        result = to_json(self.restores.launch(plan, emit, until=until if isinstance(until, str) else None))
        return {**result, "point_in_time": {**point.to_json(), "snapshot": entry.sha256, "build": built}}

    def entry_for(self, args: Mapping[str, Any], emit: Emit) -> VaultEntry:
        """The vault entry of the point ``args`` name (``to_revision`` or ``to_time``): held already, or built
        now and stored pinned, as a point-in-time restore stores it (a drill of a point uses it)."""
        point = self.point(args)
        emit({"phase": PHASE, "message": f"point in time: revision {point.revision}, {point.count.events} "
                                          f"event(s) after {point.choice.base.sha256[:12]}"})
        entry, _ = self._entry(point, emit)
        return entry

    # -- building ----------------------------------------------------------------
    def _entry(self, point: PointPlan, emit: Emit) -> tuple[VaultEntry, Optional[dict[str, Any]]]:
        """The vault entry holding the point: the one there already, or one built now (with the build's
        figures)."""
        vault = self._vault()
        if point.reuse is not None:
            emit({"phase": PHASE, "message": f"the vault holds revision {point.revision} already "
                                              f"({point.reuse[:12]}): nothing to build"})
            return vault.resolve(point.reuse), None

        def waiting(doing: str) -> None:
            emit({"phase": PHASE, "message": f"waiting for the running operation to finish ({doing})"})

        with self.slot.held(f"point-in-time: building revision {point.revision}", waiting=waiting):
            return self._build(vault, point, emit)

    def _build(self, vault: Vault, point: PointPlan, emit: Emit) -> tuple[VaultEntry, dict[str, Any]]:
        config = self._config()
        binaries = scratch_binaries(config)
        work = fsutil.ensure_private_dir(scratch_dir(config))
        base = point.choice.base
        out = work / f"point-in-time-r{point.revision}.db"
        started = time.monotonic()
        emit({"phase": PHASE, "message": f"building revision {point.revision}: base {base.sha256[:12]} at revision "
                                          f"{base.revision}, {point.count.events} events to replay"})
        try:
            with vault.materialize(base) as base_path:
                built = build(binaries, base_path, base.revision, self._segments(vault, point), upto=point.revision,
                              out=out, workdir=work, progress=self._progress(point, emit, started),
                              on_phase=lambda phase: emit({"phase": PHASE, "message": phase}))
            entry = self._store(vault, point, built)
        finally:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
        took = time.monotonic() - started
        stats = built.stats
        emit({"phase": PHASE, "message": (
            f"built revision {point.revision} in {format_duration(took)}: {stats.events} events replayed "
            f"({stats.events_per_second:.0f}/s), {stats.leases_granted} lease(s) granted again"
            + (f", {stats.unleased_puts} put(s) without their lease" if stats.unleased_puts else "")
            + f"; stored as {entry.sha256[:12]} (pinned)")})
        log.info("point-in-time: built revision %d of cluster %s from %s in %s (%d events, %.0f/s); vault %s",
                 point.revision, base.cluster_id, base.sha256[:12], format_duration(took), stats.events,
                 stats.events_per_second, entry.sha256[:12])
        return entry, {"seconds": round(took, 3), "replay_seconds": round(stats.seconds, 3),
                       "revisions": stats.revisions, "events": stats.events,
                       "events_per_second": round(stats.events_per_second), "leases_granted": stats.leases_granted,
                       "unleased_puts": stats.unleased_puts}

    @staticmethod
    def _segments(vault: Vault, point: PointPlan) -> Iterator[Segment]:
        for stored in point.choice.segments:
            yield vault.segments.read(stored)

    def _progress(self, point: PointPlan, emit: Emit, started: float) -> Callable[[int, int], None]:
        """Replay progress to etcdguardctl (at most a line a second) and to systemd's STATUS= (the slot)."""
        base = point.choice.base.revision
        last = [0.0]

        def progress(revision: int, upto: int) -> None:
            now = time.monotonic()
            if now - last[0] < 1.0:
                return
            last[0] = now
            done, total = revision - base, max(1, upto - base)
            text = (f"replayed {done} of {total} revisions ({100 * done // total}%, "
                    f"{done / max(1e-6, now - started):.0f} revisions/s)")
            self.slot.update(f"point-in-time: building revision {point.revision}: {text}")
            emit({"phase": PHASE, "message": text})
        return progress

    def _store(self, vault: Vault, point: PointPlan, built: Built) -> VaultEntry:
        base = point.choice.base
        digest = digest_file(built.path)
        at = point.at_unix if point.at_unix is not None else base.created_unix
        incoming = Incoming(sha256=digest.sha256, size=digest.size, source_member=base.source_member,
                            original_name=f"point-in-time-r{point.revision}.db", revision=point.revision,
                            cluster_id=base.cluster_id, member_id=base.member_id, etcd_version=base.etcd_version,
                            created_at=iso_utc(at), created_unix=at, kind=POINT_IN_TIME)
        reason = f"point-in-time r{point.revision} from {base.sha256[:12]}"
        entry, _ = vault.add_file(Path(built.path), incoming, pin=reason)
        return entry


def _time_of(segments: list[Segment], revision: int) -> Optional[float]:
    for segment in segments:
        for e in segment.events:
            if e.revision == revision:
                return e.time_ms / 1000
    return None
