"""Taking one verified snapshot of the local member.

The stream goes straight to a temp file inside the store directory (so the
final rename stays on one filesystem), hashed on the way; memory use does not
depend on the snapshot's size. Only a snapshot whose SHA-256 trailer checks
out, and whose file is fsync'ed, gets a name and a sidecar.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from etcdguard.agent.base import fsutil
from etcdguard.agent.base.errors import Aborted, EtcdguardError, SnapshotError, ToolError
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.etcd.client import Cancellation, EtcdClient
from etcdguard.agent.etcd.tools import SnapshotTool, snapshot_status
from etcdguard.agent.snapshots.integrity import TrailerHasher
from etcdguard.agent.snapshots.store import SnapshotMeta, SnapshotStore, iso_utc, snapshot_name

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
WRITE_BUFFER = 1 << 20
BATCH_BYTES = 1 << 20  # etcd sends 32 KiB messages; the writer thread gets them 1 MiB at a time


@dataclass(frozen=True)
class Source:
    """Where a snapshot comes from."""

    endpoint: str
    tls: ClientTLS
    member_name: str = ""
    dial_timeout: float = 5.0


class _Writer:
    """Hashes and writes chunks on its own thread, so receiving the next message from
    etcd overlaps with hashing and writing the last (hashlib and file writes release
    the GIL). The queue is bounded: memory stays flat whatever the snapshot's size."""

    def __init__(self, fh: BinaryIO, hasher: TrailerHasher, depth: int = 8) -> None:
        self.fh = fh
        self.hasher = hasher
        self.queue: queue.Queue[Optional[list[memoryview]]] = queue.Queue(depth)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                batch = self.queue.get()
                if batch is None:
                    return
                for chunk in batch:
                    self.fh.write(chunk)
                    self.hasher.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the receiving thread
            self.error = exc
            while self.queue.get() is not None:  # drain so the producer never blocks
                pass

    def put(self, batch: list[memoryview]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(batch)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stream_to_file(
    source: Source, temp: Path, *, cancel: Optional[Cancellation] = None,
    timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> tuple[TrailerHasher, SnapshotMeta]:
    """Write the member's snapshot stream to ``temp`` (0600), fsync it, check the trailer.

    Returns the hasher and a provisional meta (revision from the status header,
    a lower bound until the file itself is read). ``temp`` is removed on any failure.
    """
    started = time.time()
    hasher = TrailerHasher()
    try:
        with EtcdClient(source.endpoint, source.tls, source.dial_timeout) as client:
            status = client.status()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb", buffering=WRITE_BUFFER) as fh:
                writer = _Writer(fh, hasher)
                received = last_report = batched = 0
                batch: list[memoryview] = []
                try:
                    for chunk in client.snapshot_stream(cancel, timeout):
                        batch.append(chunk)
                        batched += len(chunk)
                        if batched < BATCH_BYTES:
                            continue
                        if cancel is not None and cancel.requested:
                            raise Aborted(f"snapshot aborted: {cancel.reason}")
                        writer.put(batch)
                        received += batched
                        batch, batched = [], 0
                        if progress is not None and received - last_report >= (8 << 20):
                            last_report = received
                            progress(received)
                    if batch:
                        writer.put(batch)
                finally:
                    writer.close()
                if cancel is not None and cancel.requested:
                    raise Aborted(f"snapshot aborted: {cancel.reason}")
                fh.flush()
                os.fsync(fh.fileno())
        hasher.check(f"snapshot from {source.endpoint}")
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if isinstance(exc, EtcdguardError) and cancel is not None and cancel.requested:
            raise Aborted(f"snapshot aborted: {cancel.reason}") from None
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
        member_name=source.member_name,
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


def take_snapshot(
    source: Source, store: SnapshotStore, *, tool: Optional[SnapshotTool] = None,
    cancel: Optional[Cancellation] = None, timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> SnapshotMeta:
    """Take, verify and catalog one snapshot; the catalog is unchanged on failure."""
    fsutil.ensure_private_dir(store.dir)
    temp = store.temp_path()
    _, meta = stream_to_file(source, temp, cancel=cancel, timeout=timeout, progress=progress)
    try:
        meta = read_file_facts(meta, temp, tool)
        if cancel is not None and cancel.requested:
            raise Aborted(f"snapshot aborted: {cancel.reason}")
        data = meta.to_json()
        data.update(name=snapshot_name(meta.created_unix, meta.revision),
                    duration_seconds=round(time.time() - meta.created_unix, 3))
        return store.commit(temp, SnapshotMeta(**data))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def save_to_file(
    source: Source, output: Path, *, tool: Optional[SnapshotTool] = None,
    cancel: Optional[Cancellation] = None, timeout: float = 1800.0, progress: Optional[Progress] = None,
) -> SnapshotMeta:
    """Like `etcdctl snapshot save FILE`, verified, written atomically (no sidecar)."""
    if output.is_dir():
        raise SnapshotError(f"--output {output} is a directory; give a file name")
    if not output.parent.is_dir():
        raise SnapshotError(f"--output {output}: directory {output.parent} does not exist")
    temp = fsutil.temp_path(output.parent)
    _, meta = stream_to_file(source, temp, cancel=cancel, timeout=timeout, progress=progress)
    try:
        meta = read_file_facts(meta, temp, tool)
        fsutil.commit_temp(temp, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    data = meta.to_json()
    data.update(name=output.name, path=str(output), duration_seconds=round(time.time() - meta.created_unix, 3))
    return SnapshotMeta(**data)
