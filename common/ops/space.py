"""How much free disk a restore needs on a member (pure): one rule for the plan and the agent's preflight.

The restore tool writes the database (about the snapshot's size) and one WAL
segment, which etcd preallocates at 64 MiB, into a new directory beside the
live data, on the same filesystem, while etcd keeps serving and writing
there. Twice the snapshot is not enough for a small snapshot (the WAL alone
is 64 MiB) and more than needed for a large one; so the need is the
database, the WAL segment where it lands, and a margin for the live member's
own writes meanwhile (a tenth of the database, at least 64 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
WAL_SEGMENT = 64 * MIB
MIN_MARGIN = 64 * MIB


@dataclass(frozen=True)
class SpaceNeed:
    data_dir: int       # bytes free needed on the data dir's filesystem
    wal_dir: int        # ... on a separate WAL dir's filesystem (0: the WAL is inside the data dir)

    def describe(self) -> str:
        text = f"{self.data_dir // MIB} MiB on the data dir"
        return text + (f" and {self.wal_dir // MIB} MiB on the WAL dir" if self.wal_dir else "")


def restore_space(snapshot_size: int, separate_wal: bool) -> SpaceNeed:
    """Free bytes a restore of a ``snapshot_size``-byte snapshot needs beside the live data."""
    db = max(0, snapshot_size)
    margin = max(MIN_MARGIN, db // 10)
    if separate_wal:
        return SpaceNeed(data_dir=db + margin, wal_dir=WAL_SEGMENT + MIN_MARGIN)
    return SpaceNeed(data_dir=db + WAL_SEGMENT + margin, wal_dir=0)
