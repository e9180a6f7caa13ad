"""One sink for a snapshot arriving over the network: hash it and write it, off the receiving thread.

The agent taking a snapshot (etcd's gRPC stream, ~32 KiB messages) and the
coordinator fetching one (ZeroMQ, 1 MiB chunks) do the same job: write the
bytes strictly in order to a file and feed them to a hasher, without slowing
down the thread that receives them and without holding the file in memory.

- The receiving thread only queues: chunks are gathered into batches of about
  ``batch_bytes`` and handed to a writer thread through a queue of ``depth``
  batches, so memory stays at about ``depth * batch_bytes`` whatever the size.
- The writer thread writes each batch with one ``writev`` and hashes it;
  file writes and hashlib release the GIL, so this overlaps with receiving.
- With ``writeback`` set, Linux is asked every that many bytes to start
  writing the range out (``posix_fadvise(DONTNEED)``), so the dirty page cache
  stays small and the closing fsync has little left to do. A file that is
  read again right away (``etcdutl snapshot status``) is better off without it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Sequence
from typing import Optional, Protocol, Union

Buffer = Union[bytes, bytearray, memoryview]

DEFAULT_BATCH = 1 << 20
DEFAULT_DEPTH = 16
_IOV_MAX = 1024  # Linux's UIO_MAXIOV: buffers one writev takes


class Hasher(Protocol):
    def update(self, data: Buffer) -> None: ...


def write_all(fd: int, chunks: Sequence[Buffer]) -> int:
    """Write ``chunks`` to ``fd`` in order with as few ``writev`` calls as the kernel allows."""
    pending = [memoryview(c).cast("B") for c in chunks if len(c)]
    total = 0
    while pending:
        n = os.writev(fd, pending[:_IOV_MAX])
        total += n
        while n and pending:
            if n >= len(pending[0]):
                n -= len(pending[0])
                pending.pop(0)
            else:
                pending[0] = pending[0][n:]
                n = 0
    return total


class HashingSink:
    """Writes chunks in order to ``fd`` and feeds them to ``hasher``, on a thread of its own.

    ``size`` counts the bytes accepted so far. Errors of the writer thread (a
    full disk, a hasher refusing more bytes than declared) are raised by the
    next ``write`` or by ``close``. Always call ``close`` (idempotent); the
    file descriptor stays the caller's.
    """

    def __init__(self, fd: int, hasher: Hasher, *, batch_bytes: int = DEFAULT_BATCH, depth: int = DEFAULT_DEPTH,
                 writeback: int = 0, name: str = "hashing-sink") -> None:
        self.fd = fd
        self.hasher = hasher
        self.size = 0
        self._batch: list[Buffer] = []
        self._batched = 0
        self._batch_bytes = max(1, batch_bytes)
        self._writeback = writeback
        self._written = 0
        self._hinted = 0
        self._error: Optional[BaseException] = None
        self._queue: queue.Queue[Optional[list[Buffer]]] = queue.Queue(max(1, depth))
        self._thread: Optional[threading.Thread] = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # drain, so the receiving thread never blocks on a dead writer
            try:
                self._written += write_all(self.fd, batch)
                for chunk in batch:
                    self.hasher.update(chunk)
                if self._writeback and self._written - self._hinted >= self._writeback:
                    # Linux starts writeback of the range's dirty pages (and drops its clean ones)
                    with contextlib.suppress(OSError, AttributeError):
                        os.posix_fadvise(self.fd, self._hinted, self._written - self._hinted, os.POSIX_FADV_DONTNEED)
                    self._hinted = self._written
            except BaseException as exc:  # noqa: BLE001 - handed to the receiving thread
                self._error = exc

    def write(self, data: Buffer) -> None:
        """Accept the next chunk (kept by reference until written: do not reuse its buffer)."""
        if self._error is not None:
            raise self._error
        if self._thread is None:
            raise ValueError("write to a closed sink")
        if not len(data):
            return
        self._batch.append(data)
        self._batched += len(data)
        self.size += len(data)
        if self._batched >= self._batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch, self._batched = [], 0

    def close(self) -> None:
        """Write what is queued, stop the writer thread, raise its error if it had one."""
        if self._thread is not None:
            if self._error is None:
                self._flush()
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> HashingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()
