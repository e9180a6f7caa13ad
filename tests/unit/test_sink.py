"""The hashing sink both snapshot paths write through: order, batching, bounded queue, errors."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from etcdguard.common.snapshot.integrity import TrailerHasher
from etcdguard.common.snapshot.sink import HashingSink, write_all

from tests.helpers.net import wait_until


def body(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


@pytest.mark.parametrize(("chunk", "batch", "depth"), [(1, 1, 1), (32 * 1024, 1 << 20, 8), (300_000, 1, 2),
                                                      (7, 100, 3)])
def test_writes_and_hashes_every_byte_in_order(tmp_path: Path, chunk: int, batch: int, depth: int) -> None:
    data = body(20_000 if chunk < 10 else 3 << 20)
    data += hashlib.sha256(data).digest()
    hasher = TrailerHasher()
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with HashingSink(fd, hasher, batch_bytes=batch, depth=depth) as sink:
            for pos in range(0, len(data), chunk):
                sink.write(memoryview(data)[pos:pos + chunk])
            assert sink.size == len(data)
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == data
    assert (hasher.size, hasher.sha256, hasher.trailer_ok()) == (len(data), hashlib.sha256(data).hexdigest(), True)


class Refusing:
    """A hasher that refuses the bytes after ``limit``, as KnownSizeDigest does past its declared size."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seen = limit, 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.seen += len(data)
        if self.seen > self.limit:
            raise ValueError(f"{self.seen} bytes is more than the declared {self.limit}")


def test_an_error_on_the_writer_thread_reaches_the_caller(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = HashingSink(fd, Refusing(10), batch_bytes=1, depth=1)
        sink.write(b"x" * 8)
        sink.write(b"x" * 8)   # the writer thread fails on this one
        with pytest.raises(ValueError, match="more than the declared 10"):
            for _ in range(1000):   # queued writes never block on a dead writer; one of them raises
                sink.write(b"x")
        with pytest.raises(ValueError, match="more than the declared 10"):
            sink.close()
        with pytest.raises(ValueError, match="more than the declared 10"):
            sink.close()   # idempotent, and keeps saying why
    finally:
        os.close(fd)


def test_a_full_disk_is_raised_by_close(tmp_path: Path) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full")
    fd = os.open(full, os.O_WRONLY)
    try:
        sink = HashingSink(fd, TrailerHasher(), batch_bytes=1 << 20)
        sink.write(b"x" * 100)
        with pytest.raises(OSError) as info:
            sink.close()
        assert info.value.errno == 28  # ENOSPC
    finally:
        os.close(fd)


def test_the_queue_bounds_what_is_held_in_memory(tmp_path: Path) -> None:
    """With the writer stuck, the receiving thread blocks after ``depth`` batches instead of buffering more."""
    release = threading.Event()

    class Slow:
        def update(self, data: bytes | bytearray | memoryview) -> None:
            release.wait(10)

    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    accepted: list[int] = []
    try:
        sink = HashingSink(fd, Slow(), batch_bytes=1, depth=2)

        def produce() -> None:
            for _ in range(10):
                sink.write(b"y" * 1000)
                accepted.append(sink.size)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        # one batch held by the stuck writer, two queued: the fourth write blocks
        wait_until(lambda: len(accepted) == 3, 10, interval=0.005, what="three writes accepted")
        t.join(0.2)   # an observation window: nothing more may be accepted while the writer is stuck
        assert t.is_alive() and len(accepted) == 3
        release.set()
        t.join(10)
        sink.close()
        assert accepted[-1] == 10_000
    finally:
        release.set()
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"y" * 10_000


def test_write_all_continues_after_a_short_write() -> None:
    r, w = os.pipe()
    try:
        data = [body(40_000, 2), b"", body(50_000, 3)]
        got = bytearray()

        def drain() -> None:
            while len(got) < 90_000:
                got.extend(os.read(r, 7_000))   # small reads: the pipe fills and writev comes back short

        t = threading.Thread(target=drain)
        t.start()
        assert write_all(w, data) == 90_000
        t.join(10)
        assert bytes(got) == data[0] + data[2]
    finally:
        os.close(r)
        os.close(w)
