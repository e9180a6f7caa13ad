"""What the vault should do, decided as data: which snapshot to pull, which member to back up.

Pure functions over the members' typed views that return the decision and
one sentence saying why; the daemon logs the sentence and carries it out.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from etcdguard.common.base import schedule
from etcdguard.common.base.agekeys import AgeError
from etcdguard.common.base.errors import EtcdUnavailable, SnapshotCorrupt, UnsafeRefusal, UsageError
from etcdguard.common.wire.protocol import BUSY, RemoteError
from etcdguard.common.wire.report import SnapshotSummary
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.vault.attempts import SCHEDULED, Attempt, Copies
from etcdguard.coordinator.vault.store import VaultBackendError, VaultDiskError


@dataclass(frozen=True)
class PullChoice:
    """What a scheduled pull should do: fetch ``snapshot`` from ``member``, or nothing."""

    sentence: str
    member: Optional[str] = None
    snapshot: Optional[SnapshotSummary] = None
    failure: Optional[str] = None   # a metrics reason when there is nothing to pull but should be
    fresh_as_of: Optional[float] = None   # the vault holds data as fresh as this snapshot's time


def choose_pull(views: Sequence[MemberView], in_vault: Callable[[str], bool],
                vault_revisions: Optional[Mapping[str, int]], interval: float,
                held: Collection[tuple[str, int]] = ()) -> PullChoice:
    """The newest verified snapshot of a healthy member, a follower's if one is as fresh.

    A follower's snapshot counts as "as fresh" when it is at most one interval
    older than the freshest; only then is the leader spared. Snapshots of
    unhealthy members are not pulled: a partitioned member serves a
    fresh-looking snapshot of stale data. ``held`` is the (cluster id,
    revision) of every vault entry with an exact revision: a snapshot of one
    of those holds the same data (an idle cluster) and is not copied again.
    ``vault_revisions`` is the highest revision the vault holds of each
    cluster: a snapshot is newer than the vault's when its revision is higher
    (or its cluster is new, after a restore), whatever the clocks stamped.
    """
    reachable = [v for v in views if v.reachable]
    if not reachable:
        return PullChoice(f"no agent answered ({len(views)} configured)", failure="unreachable")
    healthy = [v for v in reachable if v.healthy]
    if not healthy:
        return PullChoice(f"{len(reachable)} agent(s) answered but no member reports a healthy etcd",
                          failure="unreachable")
    candidates = [(v, s) for v in healthy for s in (v.newest,) if s is not None]
    if not candidates:
        return PullChoice("no healthy member has a snapshot in its store yet", failure="no_snapshot")
    freshest = max(s.created_unix for _, s in candidates)

    def rank(item: tuple[MemberView, SnapshotSummary]) -> tuple[bool, bool, float, str]:
        v, s = item
        return (s.created_unix >= freshest - interval, not v.is_leader, s.created_unix, v.name)

    view, snap = max(candidates, key=rank)
    role = "leader" if view.is_leader else "follower"
    label = f"{snap.name} of {role} {view.name} (revision {snap.revision}, sha256 {snap.sha256[:12]})"
    if in_vault(snap.sha256):
        return PullChoice(f"the vault already has the newest snapshot, {label}")
    if (snap.cluster_id, snap.revision) in held and snap.revision_source == "snapshot-status":
        return PullChoice(f"the vault already holds revision {snap.revision} of cluster {snap.cluster_id}: the "
                          f"newest snapshot of a healthy member, {label}, holds the same data",
                          fresh_as_of=snap.created_unix)
    vault_revision = (vault_revisions or {}).get(snap.cluster_id)
    if vault_revision is not None and snap.revision <= vault_revision:
        return PullChoice(f"the newest snapshot of a healthy member, {label}, is not newer than the vault's "
                          f"(revision {vault_revision} of cluster {snap.cluster_id})")
    return PullChoice(f"pulling {label}", member=view.name, snapshot=snap)


def choose_backup_member(views: Sequence[MemberView], requested: Optional[str]) -> tuple[MemberView, str]:
    """The member to take a snapshot on now, and why. Raises for impossible requests."""
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
                                f"({v.etcd.error or 'no health report'}); a snapshot of it may hold stale data")
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
    from etcdguard.coordinator.agents.client import AgentUnreachable

    if isinstance(exc, AgentUnreachable):
        return "unreachable"
    if isinstance(exc, RemoteError):
        return "busy" if exc.code == BUSY else "transfer"
    if isinstance(exc, SnapshotCorrupt):
        return "checksum"
    if isinstance(exc, (VaultDiskError, OSError)):
        return "disk"
    if isinstance(exc, (VaultBackendError, AgeError)):
        return "backend"
    return "other"


def next_pull_due(copies: Copies, due: float, now: float, interval: float, rng: random.Random) -> float:
    """When the next scheduled pull is due (monotonic), after the attempt ``copies.last`` recorded.

    A failure, a backup's as much as a pull's, is retried after 30 s, 60 s,
    120 s, ... capped at the interval (schedule.after_failure); a success after
    failures, or any scheduled pull's, starts the interval again. A backup that
    succeeds with nothing failing leaves the schedule as it was.
    """
    last = copies.last
    if last is None:
        return due
    if not last.ok:
        retry = schedule.after_failure(now, interval, copies.failures)
        return retry if last.kind == SCHEDULED else min(due, retry)
    if last.kind == SCHEDULED or copies.ended:
        return schedule.after_success(now, interval, rng)
    return due


def retry_now(failing: Optional[Attempt], recovered_at: Optional[float]) -> bool:
    """Whether a failed copy is retried at once: its storage failed, and a listing of the storage has since
    answered again after failing (the outage is over). Once per recovery: a retry that fails again ends
    after it, and waits for the backoff or the next recovery."""
    return (failing is not None and failing.reason == "backend" and recovered_at is not None
            and recovered_at > failing.at)
