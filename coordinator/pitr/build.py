"""Building a point in time: a full snapshot plus the captured changes, replayed into a new snapshot.

Off the live cluster, in a scratch etcd (common/etcd/scratch.py): the base
snapshot restored without a revision bump (so revisions stay the original
ones), every captured revision after it replayed up to the target
(replay.py), then the scratch store snapshotted through etcd's own snapshot
stream into a new file, whose trailer is checked as it is written and which
`snapshot status` proves restorable at exactly the target revision. The
ordinary cluster restore then restores that file like any other snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.capture.segment import Segment
from etcdguard.common.etcd.scratch import EtcdBinaries, serving
from etcdguard.common.etcd.writes import EtcdWriter
from etcdguard.common.snapshot.integrity import TrailerHasher, verify_restorable
from etcdguard.common.snapshot.sink import write_all
from etcdguard.coordinator.pitr.replay import Progress, Replayer, ReplayError, ReplayStats


@dataclass(frozen=True)
class Built:
    """A point-in-time snapshot file, proven restorable at its revision."""

    path: Path
    sha256: str
    size: int
    revision: int
    stats: ReplayStats


def build(binaries: EtcdBinaries, base: Path, base_revision: int, segments: Iterable[Segment], *, upto: int,
          out: Path, workdir: Optional[Path] = None, progress: Optional[Progress] = None,
          on_phase: Callable[[str], None] = lambda _: None) -> Built:
    """Replay ``segments`` on ``base`` (at ``base_revision``) up to revision ``upto``, into ``out``."""
    with serving(binaries, base, workdir) as (_, client):
        at = client.status().revision
        if at != base_revision:
            raise ReplayError(f"the base snapshot restored at revision {at}, not its recorded {base_revision}")
        on_phase("replaying")
        replayer = Replayer(EtcdWriter(client), base_revision, upto, progress)
        for segment in segments:
            replayer.apply(segment.events)
            if replayer.done:
                break
        if not replayer.done:
            raise ReplayError(f"the captured changes end at revision {replayer.expected}, before {upto}")
        on_phase("snapshotting")
        temp = out.with_name(f".{out.name}.tmp")
        hasher = TrailerHasher()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            for chunk in client.snapshot_stream():
                hasher.update(chunk)
                write_all(fd, [chunk])
            hasher.check(f"the point-in-time snapshot of revision {upto}")
            fsutil.commit_temp(temp, out, fd=fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
    on_phase("verifying")
    check = verify_restorable(out, tool=binaries.tool)
    if check.revision != upto:
        raise EtcdguardError(f"the point-in-time snapshot is at revision {check.revision}, not {upto}")
    return Built(out, check.digest.sha256, check.digest.size, upto, replayer.stats)

