"""The agent's status report: one typed value the agent sends and the coordinator reads.

The agent builds it (agent/control/server.py) from what it knows of its
member, etcd, tools, disk, store and restore operations; the coordinator
decodes it once (``AgentReport.from_json``) and decides on the typed value:
the vault pull, the backup member, the restore plan's preflight. A field the
agent cannot know (etcd down, tool missing) is None, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from etcdguard.common.wire.typed import from_json, renamed, to_json


@dataclass(frozen=True)
class AgentInfo:
    version: str
    busy: Optional[str] = None          # what the single long-op slot does now


@dataclass(frozen=True)
class MemberConfig:
    """The member as discovery and config describe it (no etcd call needed)."""

    name: str
    data_dir: str
    peer_url: Optional[str] = None
    wal_dir: Optional[str] = None               # a separate --wal-dir, else None
    runtime: Optional[str] = None               # static-pod | systemd | process
    endpoints: tuple[str, ...] = ()
    initial_cluster: Optional[str] = None       # the member's configured --initial-cluster
    quota_backend_bytes: Optional[int] = None   # --quota-backend-bytes (None: etcd's default)
    apiserver: Optional[str] = None             # how kube-apiserver is fenced here (None: not on this node)
    restart: tuple[str, ...] = ()               # what is restarted after a cluster restore


@dataclass(frozen=True)
class ClusterMember:
    """One entry of etcd's member list as this member sees it."""

    id: str                       # hex, as etcdctl prints it
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool = False


FRESH_FOR = 5.0   # seconds: an answer of etcd older than this is not the member's state now


@dataclass(frozen=True)
class EtcdHealth:
    """The local etcd as the agent measured it at ``measured_at``, ``age`` seconds before the reply.

    Health, role, leader and revision are facts of one moment, and a restore
    or an operator acts on them as facts of now; so an answer older than
    FRESH_FOR is never sent as it was: the agent sends it ``stale``, with those
    fields cleared (unknown) and an error that says when etcd was last seen
    healthy, and a reader also treats an older ``age`` as not current
    (``current``). ``quorum`` is whether a raft request (the alarm list) got
    an answer at that moment: False when the member has no leader or the
    request timed out, None when it was not asked (etcd did not answer, or
    an agent older than this field). Fields added later default to None, so
    older reports stay readable.
    """

    healthy: bool = False
    error: Optional[str] = None
    version: Optional[str] = None
    revision: Optional[int] = None
    member_id: Optional[str] = None
    cluster_id: Optional[str] = None
    leader: Optional[str] = None
    is_leader: bool = False
    is_learner: bool = False
    db_size: Optional[int] = None
    members: tuple[ClusterMember, ...] = ()
    alarms: tuple[str, ...] = ()
    age: Optional[float] = None                 # seconds between the measurement and the reply
    measured_at: Optional[str] = None           # ISO 8601 UTC of the measurement
    stale: bool = False                         # the last measurement is older than FRESH_FOR: not now
    quorum: Optional[bool] = None
    raft_applied_index: Optional[int] = None    # None: etcd did not report it
    db_size_in_use: Optional[int] = None
    raft_index: Optional[int] = None            # the member's raft index (the leader's: the cluster's commit)
    raft_term: Optional[int] = None

    def current(self, fresh_for: float = FRESH_FOR) -> bool:
        """Measured within ``fresh_for`` seconds of the reply (an answer without an age was asked for it)."""
        return not self.stale and (self.age is None or self.age <= fresh_for)


@dataclass(frozen=True)
class ToolInfo:
    path: str
    kind: str                   # etcdutl | etcdctl
    version: str
    supports_bump: bool


@dataclass(frozen=True)
class DiskInfo:
    data_dir_free: Optional[int] = None
    wal_dir_free: Optional[int] = None
    store_free: Optional[int] = None
    staging_free: Optional[int] = None          # where a cluster restore's snapshot is uploaded
    db_file: Optional[int] = None               # bytes of the member's member/snap/db (None: there is none)


@dataclass(frozen=True)
class SnapshotSummary:
    """A catalogued snapshot as the coordinator needs it (the sidecar's main facts)."""

    name: str
    size: int
    sha256: str
    revision: int
    created_at: str
    created_unix: float
    member: str = field(default="", metadata=renamed("member_name"))    # the etcd member it was taken on
    member_id: str = ""
    cluster_id: str = ""
    etcd_version: str = ""
    pinned: Optional[str] = None
    revision_source: str = "snapshot-status"   # "status-header": a lower bound (no etcdutl/etcdctl on the node)
    bundle: Optional[str] = None               # "encrypted": a node bundle the vault may pull; "local": stays there
    hashkv: Optional[int] = None               # the member's hashkv at ``revision`` (None: not recorded)
    hashkv_compact_revision: Optional[int] = None
    key_count: Optional[int] = None            # keys in the store at ``revision``

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        return data


@dataclass(frozen=True)
class RestoreInfo:
    locked: bool = False                        # a restore step holds the node's lock now
    last_op: Optional[str] = None
    last_state: Optional[str] = None
    open_ops: tuple[str, ...] = ()              # operations not finished (running or needing attention)


@dataclass(frozen=True)
class CertificateInfo:
    """A certificate file etcd or kube-apiserver is configured with, as the agent read it."""

    path: str
    kinds: tuple[str, ...]                      # server, peer, client, ca (one file may serve several)
    not_after: Optional[str] = None             # ISO 8601 UTC; the soonest of the file's certificates
    not_after_unix: Optional[float] = None
    subject: str = ""
    error: Optional[str] = None                 # the file could not be read or parsed


@dataclass(frozen=True)
class AgentReport:
    agent: AgentInfo
    member: MemberConfig
    etcd: EtcdHealth = field(default_factory=EtcdHealth)
    restore_tool: Optional[ToolInfo] = None
    disk: DiskInfo = field(default_factory=DiskInfo)
    snapshots: tuple[SnapshotSummary, ...] = ()
    restore: RestoreInfo = field(default_factory=RestoreInfo)
    certificates: tuple[CertificateInfo, ...] = ()

    @property
    def newest(self) -> Optional[SnapshotSummary]:
        """The newest snapshot in the member's store (by revision, then time)."""
        return max(self.snapshots, key=lambda s: (s.revision, s.created_unix), default=None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        return data

    @classmethod
    def from_json(cls, data: Any) -> AgentReport:
        """Raises ValueError naming the field when the report is malformed."""
        return from_json(cls, data, "status")
