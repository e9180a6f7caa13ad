"""The parameters of an operation on one node: what the agent's steps act on, recorded in its journal.

Every path is absolute, so a resume restores the same file from any working
directory; ``restore_argv`` is the exact restore command, checked against the
other fields before it runs (agent/restore/prepare.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Union


@dataclass(frozen=True)
class RestoreParams:
    op: str
    snapshot: str
    snapshot_sha256: str
    snapshot_size: int
    snapshot_revision: int
    name: str
    peer_url: str
    initial_cluster: str
    token: str
    data_dir: str
    bump_revision: int          # 0 when the tool cannot bump
    restore_argv: tuple[str, ...]
    live_cluster_id: str = ""   # the cluster this node served when the operation was planned (hex; "" unknown)
    wal_dir: str = ""           # the member's separate --wal-dir ("" : the WAL is inside the data dir)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["restore_argv"] = list(self.restore_argv)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestoreParams:
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "restore_argv": tuple(data["restore_argv"])})

    @property
    def expected_min_revision(self) -> int:
        return self.snapshot_revision + self.bump_revision


@dataclass(frozen=True)
class MemberParams:
    """The parameters of an operation on one member that restores nothing (a replacement): who it is, where
    its data lives and the peer URL it joins with, recorded in the journal when the operation opens."""

    op: str
    name: str
    peer_url: str
    data_dir: str
    wal_dir: str = ""           # the member's separate --wal-dir ("" : the WAL is inside the data dir)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


NodeParams = Union[RestoreParams, MemberParams]
