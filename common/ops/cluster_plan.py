"""The cluster operation's plan and its summary: plain data that crosses the control socket.

The coordinator builds a plan (coordinator/restore/plan.py), the steps describe
themselves in it (common/ops/steps), ``etcdguardctl`` prints it, and the
journal's first record holds it, so a restarted coordinator resumes exactly
the plan the operator reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from etcdguard.common.wire.typed import from_json, renamed, to_json


@dataclass(frozen=True)
class SnapshotRef:
    """The vault snapshot a plan restores (everything the plan and the summary show of it)."""

    id: str                      # the sha256
    size: int
    revision: int
    member: str = field(metadata=renamed("source_member"))   # where it was taken (older journals: source_member)
    created_at: str
    created_unix: float
    etcd_version: str = ""
    cluster_id: str = ""
    revision_exact: bool = False     # read from the file by `snapshot status` (not a lower bound)


@dataclass(frozen=True)
class PlannedMember:
    member: str
    agent: str
    peer_url: str
    data_dir: str
    wal_dir: Optional[str] = None
    runtime: Optional[str] = None
    apiserver: Optional[str] = None
    restart: tuple[str, ...] = ()
    tool: str = ""
    quota_backend_bytes: Optional[int] = None   # --quota-backend-bytes (None: etcd's default)


# The named overrides an operator may give (``--allow-...``); ``--force`` is an alias for all of them.
ALLOW_OTHER_CLUSTER = "allow-other-cluster"
ALLOW_VERSION_MISMATCH = "allow-version-mismatch"
ALLOW_MIXED_CLUSTER_IDS = "allow-mixed-cluster-ids"
OVERRIDES = (ALLOW_OTHER_CLUSTER, ALLOW_VERSION_MISMATCH, ALLOW_MIXED_CLUSTER_IDS)


@dataclass(frozen=True)
class Refusal:
    """One reason not to go on. ``override``: the named override (``--allow-...``) that accepts it when the
    operator knows better; None: nothing overrides it. ``forcible`` is kept for older plans."""

    check: str
    message: str
    member: Optional[str] = None
    forcible: bool = False
    override: Optional[str] = None


@dataclass(frozen=True)
class PlannedPhase:
    phase: str
    destructive: bool
    what: str
    on_failure: str
    members: tuple[tuple[str, str], ...] = ()     # (member, what happens there) where it differs per node


@dataclass(frozen=True)
class RestorePlan:
    plan_id: str
    op: str
    kind: str
    snapshot: Optional[SnapshotRef]             # None: an operation that restores nothing (replace, defrag)
    members: tuple[PlannedMember, ...]
    initial_cluster: str
    token: str
    bump_revision: int
    expected_min_revision: int
    live_revision: Optional[int]
    live_cluster_id: Optional[str]
    discarded_revisions: Optional[int]
    safety_snapshot: bool
    phases: tuple[PlannedPhase, ...]
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()
    force: bool = False
    rollback_of: Optional[str] = None
    created_at: str = ""
    downtime_phases: tuple[str, ...] = ()      # fence..unfence: the flow's steps from the first destructive one
    start_timeout: float = 120.0
    fence_settle: float = 0.5
    flow: str = "restore"                       # the flow (common/ops/flows.py) the operation runs
    cluster_down: bool = False                  # no member had quorum when planned: every phase is downtime
    overrides: tuple[str, ...] = ()             # the named overrides the operator gave (--force: every one)
    quorum: str = ""                            # the quorum as the plan saw it, in one sentence
    warm: tuple[str, ...] = ()                  # members holding this snapshot restored ahead (warm standby)
    target: Optional[str] = None                # the one member the operation is about (replace; defrag --member)
    target_peer_url: str = ""                   # the peer URL the target (re)joins with (replace)
    catch_up_timeout: float = 600.0             # how long a joining member may take to catch up (replace)
    notes: tuple[str, ...] = ()                 # what the operator is told beside the phases (plain sentences)

    @property
    def restored(self) -> SnapshotRef:
        """The snapshot a restore restores; ValueError for a plan that restores none."""
        if self.snapshot is None:
            raise ValueError(f"operation {self.op} ({self.flow}) restores no snapshot")
        return self.snapshot

    @property
    def blocking(self) -> tuple[Refusal, ...]:
        """The refusals that stop this plan: all but those whose named override the operator gave."""
        return tuple(r for r in self.refusals if not self.overridden(r))

    def overridden(self, r: Refusal) -> bool:
        if r.override is not None:
            return r.override in self.overrides
        return r.forcible and self.force     # a plan recorded before overrides had names

    def member(self, name: str) -> PlannedMember:
        for m in self.members:
            if m.member == name:
                return m
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        data["refused"] = bool(self.blocking)
        return data

    @classmethod
    def from_json(cls, data: Any) -> RestorePlan:
        return from_json(cls, data, "plan")


@dataclass(frozen=True)
class PhaseTiming:
    phase: str
    seconds: float


@dataclass(frozen=True)
class Summary:
    """What an operator reads when a restore ends."""

    op: str
    state: str
    plan_id: str
    snapshot: Optional[str]
    phases: tuple[PhaseTiming, ...] = ()
    downtime_seconds: Optional[float] = None
    total_seconds: Optional[float] = None
    new_cluster_id: Optional[str] = None
    old_cluster_id: Optional[str] = None
    kept: tuple[tuple[str, str], ...] = ()           # (member, path of the pre-restore data)
    pre_restore_snapshot: Optional[str] = None
    error: Optional[str] = None
    failed_phase: Optional[str] = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    down_before: bool = False                        # no member had quorum when the restore started
    time_to_healthy_seconds: Optional[float] = None  # from the operation's start to quorum on the restored data
    flow: str = "restore"                            # the flow the operation ran (common/ops/flows.py)
    target: Optional[str] = None                     # the member it was about (replace; defrag --member)
