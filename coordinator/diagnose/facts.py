"""The facts a diagnosis decides from: typed, plain values gathered once (gather.py), judged by verdict.py.

Everything here was measured now (the agents' reports are seconds old) or is
said to be unknown; nothing is a dict re-parsed by the judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from etcdguard.common.wire.report import CertificateInfo, EtcdHealth
from etcdguard.coordinator.agents.quorum import MemberState, Quorum


@dataclass(frozen=True)
class MemberSeen:
    """One configured member as its agent reported it now."""

    name: str
    agent: str
    state: MemberState
    etcd: EtcdHealth = field(default_factory=EtcdHealth)
    agent_error: Optional[str] = None
    peer_url: Optional[str] = None
    db_on_disk: Optional[int] = None                 # bytes of member/snap/db on its node (None: none there)
    quota_backend_bytes: Optional[int] = None
    certificates: tuple[CertificateInfo, ...] = ()

    @property
    def reachable(self) -> bool:
        return self.state is not MemberState.UNREACHABLE


@dataclass(frozen=True)
class VaultSeen:
    newest_sha256: Optional[str] = None
    newest_revision: Optional[int] = None
    newest_age: Optional[float] = None               # seconds
    interval: float = 3600.0
    failures: int = 0                                # vault pulls failed in a row
    last_error: Optional[str] = None                 # the last pull's message when it failed


@dataclass(frozen=True)
class OperationSeen:
    """An operation that is not finished (running, interrupted, waiting for the operator)."""

    op: str
    flow: str
    state: str
    target: Optional[str] = None
    running: bool = False


@dataclass(frozen=True)
class ClusterFacts:
    members: tuple[MemberSeen, ...]
    quorum: Quorum
    vault: VaultSeen = field(default_factory=VaultSeen)
    operations: tuple[OperationSeen, ...] = ()
    now: float = 0.0

    def member(self, name: str) -> Optional[MemberSeen]:
        return next((m for m in self.members if m.name == name), None)

    @property
    def leader(self) -> Optional[MemberSeen]:
        return next((m for m in self.members if m.etcd.is_leader and m.state is MemberState.HEALTHY), None)
