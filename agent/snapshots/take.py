"""Taking one verified snapshot of the local member.

The stream goes straight to a temp file inside the store directory (so the
final rename stays on one filesystem), hashed on the way; memory use does not
depend on the snapshot's size. Only a snapshot whose SHA-256 trailer checks
out, and whose file is fsync'ed on commit, gets a name and a sidecar. The
sidecar also records the member's hashkv and key count at the snapshot's
revision: what a restore drill proves the restored store against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.snapshots.store import SnapshotStore, snapshot_name
from etcdguard.common.base import fsutil
from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import Aborted, EtcdguardError, SnapshotError, ToolError
from etcdguard.common.etcd.client import Cancellation, EtcdClient
from etcdguard.common.snapshot.integrity import TrailerHasher
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.snapshot.sink import HashingSink
from etcdguard.common.snapshot.tools import SnapshotTool, snapshot_status

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
BATCH_BYTES = 1 << 20  # etcd sends 32 KiB messages; the writer thread gets them 1 MiB at a time
QUEUE_DEPTH = 8       # batches in flight to the writer: memory stays at about 8 MiB
PROGRESS_EVERY = 8 << 20


@dataclass(frozen=True)
class Source:
    """Where a snapshot comes from."""

    endpoint: str
    tls: ClientTLS
    member_name: str = ""
    dial_timeout: float = 5.0


def stream_to_file(
    source: Source, temp: Path, *, cancel: Optional[Cancellation] = None,
    timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> tuple[TrailerHasher, SnapshotMeta]:
    """Write the member's snapshot stream to ``temp`` (0600) and check the trailer.

    Returns the hasher and a provisional meta (revision from the status header,
    a lower bound until the file itself is read). ``temp`` is removed on any
    failure; committing it (fsync + rename) is the caller's step.
    """
    started = time.time()
    hasher = TrailerHasher()
    try:
        with EtcdClient(source.endpoint, source.tls, source.dial_timeout) as client:
            status = client.status()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                # no writeback hints: `snapshot status` reads the file again right after
                with HashingSink(fd, hasher, batch_bytes=BATCH_BYTES, depth=QUEUE_DEPTH,
                                 name="snapshot-writer") as sink:
                    last_report = 0
                    for chunk in client.snapshot_stream(cancel, timeout):
                        if cancel is not None and cancel.requested:
                            raise Aborted(f"snapshot aborted: {cancel.reason}")
                        sink.write(chunk)
                        if progress is not None and sink.size - last_report >= PROGRESS_EVERY:
                            last_report = sink.size
                            progress(sink.size)
            finally:
                os.close(fd)
            if cancel is not None and cancel.requested:
                raise Aborted(f"snapshot aborted: {cancel.reason}")
        hasher.check(f"snapshot from {source.endpoint}")
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, EtcdguardError) and cancel is not None and cancel.requested:
            raise Aborted(f"snapshot aborted: {cancel.reason}") from None
        if isinstance(exc, OSError):
            raise fsutil.disk_error(f"snapshot not written to {temp.parent}", exc) from None
        raise
    if progress is not None:
        progress(hasher.size)
    meta = SnapshotMeta(
        name="",
        path=str(temp),
        size=hasher.size,
        sha256=hasher.sha256,
        revision=status.revision,
        created_at=iso_utc(started),
        created_unix=started,
        member=source.member_name,
        member_id=f"{status.member_id:x}",
        cluster_id=f"{status.cluster_id:x}",
        etcd_version=status.version,
        duration_seconds=0.0,
        revision_source="status-header",
    )
    return hasher, meta


def read_file_facts(meta: SnapshotMeta, temp: Path, tool: Optional[SnapshotTool]) -> SnapshotMeta:
    """Replace the provisional revision with the file's own (via `snapshot status`)."""
    if tool is None:
        return meta
    try:
        st = snapshot_status(tool, temp)
    except ToolError as exc:
        log.warning("could not read the snapshot's revision with %s (%s); "
                    "recording the status revision %d as a lower bound", tool.path, exc, meta.revision)
        return meta
    data = meta.to_json()
    data.update(revision=st.revision, total_keys=st.total_keys, etcd_hash=st.hash,
                revision_source="snapshot-status")
    return SnapshotMeta(**data)


STORE_FACTS_TIMEOUT = 120.0   # hashkv reads every key of the store: seconds on a large database


def record_store_facts(source: Source, meta: SnapshotMeta) -> SnapshotMeta:
    """Add the member's hashkv and key count at the snapshot's exact revision, for restore drills.

    Asked right after the snapshot, of the member it came from; HashKV and a count at a past revision
    read the same whatever was written since. A member that has compacted past that revision, or that
    does not answer, leaves them unrecorded (logged): the snapshot is good, a drill of it just checks less.
    """
    if not meta.revision_exact or meta.revision is None:
        return meta
    try:
        with EtcdClient(source.endpoint, source.tls, source.dial_timeout) as client:
            hashed = client.hashkv_full(meta.revision, timeout=STORE_FACTS_TIMEOUT)
            count = client.count(meta.revision, timeout=STORE_FACTS_TIMEOUT)
    except EtcdguardError as exc:
        log.warning("snapshot at revision %d: hashkv and key count not recorded (a drill of it checks less): %s",
                    meta.revision, exc)
        return meta
    return dataclasses.replace(meta, hashkv=hashed.hash, hashkv_compact_revision=hashed.compact_revision,
                               key_count=count)


def take_snapshot(
    source: Source, store: SnapshotStore, *, tool: Optional[SnapshotTool] = None,
    cancel: Optional[Cancellation] = None, timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> SnapshotMeta:
    """Take, verify and catalog one snapshot; the catalog is unchanged on failure."""
    try:
        fsutil.ensure_private_dir(store.dir)
    except OSError as exc:
        raise fsutil.disk_error(f"cannot create the snapshot store {store.dir}", exc) from None
    temp = store.temp_path()
    _, meta = stream_to_file(source, temp, cancel=cancel, timeout=timeout, progress=progress)
    try:
        meta = record_store_facts(source, read_file_facts(meta, temp, tool))
        if cancel is not None and cancel.requested:
            raise Aborted(f"snapshot aborted: {cancel.reason}")
        data = meta.to_json()
        data.update(name=snapshot_name(meta.created_unix, meta.require_revision()),
                    duration_seconds=round(time.time() - meta.created_unix, 3))
        return store.commit(temp, SnapshotMeta(**data))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def save_to_file(
    source: Source, output: Path, *, tool: Optional[SnapshotTool] = None,
    cancel: Optional[Cancellation] = None, timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> SnapshotMeta:
    """Like `etcdctl snapshot save FILE`, verified, written atomically (no sidecar).

    Only a new name or a regular file is replaced: a device node, FIFO, socket, directory or symlink
    at ``output`` is refused before anything is taken (and checked again right before the rename).
    """
    try:
        if output.is_dir():
            raise SnapshotError(f"--output {output} is a directory; give a file name")
        fsutil.refuse_non_regular(output, f"--output {output}")
        if not output.parent.is_dir():
            raise SnapshotError(f"--output {output}: directory {output.parent} does not exist")
    except OSError as exc:
        raise fsutil.disk_error(f"--output {output}", exc) from None
    temp = fsutil.temp_path(output.parent)
    _, meta = stream_to_file(source, temp, cancel=cancel, timeout=timeout, progress=progress)
    try:
        meta = record_store_facts(source, read_file_facts(meta, temp, tool))
        try:
            fsutil.commit_temp(temp, output)
        except OSError as exc:
            raise fsutil.disk_error(f"snapshot not saved to {output}", exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    data = meta.to_json()
    data.update(name=output.name, path=str(output), duration_seconds=round(time.time() - meta.created_unix, 3))
    return SnapshotMeta(**data)
