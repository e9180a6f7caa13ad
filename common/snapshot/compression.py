"""zstd for snapshots on their way to and in the vault: independent frames, streamed, in bounded memory.

Why independent frames: a transfer asks the agent for chunks addressed by
their offset in the snapshot (resumable at any offset, several in flight), so
the agent compresses each chunk it serves as one zstd frame of its own, and
the vault stores the frames as they arrive. A sequence of frames is one valid
zstd stream: the vault, an export and an operator with ``zstd -d`` read it
back as the snapshot. A file compressed here (a snapshot added from disk, an
agent that sends plain chunks) is cut into frames the same way.

Every frame records its content size and a checksum. A frame that arrives
over the network is decompressed only after the size it declares is checked
against the chunk it stands for, and every reader caps the decompression
window, so a hostile or damaged object cannot make a reader allocate without
bound. Compression never replaces the snapshot's identity: the sha256 of the
snapshot is checked on the decompressed bytes, wherever they are read.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Protocol, Union

import zstandard
from etcdguard.common.base.errors import SnapshotCorrupt

ZSTD = "zstd"
DEFAULT_LEVEL = 1            # zstd's fastest standard level: see docs/benchmarks.md for ratio and speed
MIN_LEVEL, MAX_LEVEL = 1, 19  # 20-22 ("ultra") need windows far larger than a frame
FRAME = 1 << 20              # bytes of snapshot per frame when a file is compressed here
MAX_WINDOW = 8 << 20         # the largest window a reader accepts: frames hold at most 4 MiB of snapshot

Buffer = Union[bytes, bytearray, memoryview]
_local = threading.local()


class Hasher(Protocol):
    def update(self, data: Buffer) -> None: ...


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def bound(size: int) -> int:
    """The most bytes a frame of ``size`` bytes of incompressible data can take (zstd's compress bound)."""
    return size + (size >> 8) + 512


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per level and thread (a compressor is not safe to share between threads)."""
    cache: Optional[dict[int, zstandard.ZstdCompressor]] = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    found = cache.get(level)
    if found is None:
        found = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return found


def compress_frame(data: Buffer, level: int = DEFAULT_LEVEL) -> bytes:
    """``data`` as one zstd frame that records its size and checksum."""
    return bytes(_compressor(level).compress(bytes(data) if isinstance(data, memoryview) else data))


def frame_size(frame: Buffer) -> int:
    """The content size a frame's header declares; SnapshotCorrupt when it is not a frame that declares one."""
    try:
        size = zstandard.frame_content_size(bytes(frame[:32]))
    except zstandard.ZstdError as exc:
        raise SnapshotCorrupt(f"not a zstd frame: {exc}") from None
    if size < 0:
        raise SnapshotCorrupt("a zstd frame without its content size")
    return int(size)


def decompress_frame(frame: Buffer, expected: int) -> bytes:
    """The content of exactly one frame of ``expected`` bytes; SnapshotCorrupt otherwise (a frame
    declaring another size, a damaged frame, a checksum that does not match, bytes after the frame)."""
    declared = frame_size(frame)
    if declared != expected:
        raise SnapshotCorrupt(f"a zstd frame declares {declared} bytes, the chunk it carries has {expected}")
    obj = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
    try:
        out = obj.decompress(bytes(frame))
    except zstandard.ZstdError as exc:
        raise SnapshotCorrupt(f"a damaged zstd frame: {exc}") from None
    if not obj.eof or obj.unused_data or len(out) != expected:
        raise SnapshotCorrupt(f"a zstd frame of {len(frame)} bytes did not decompress to exactly one frame of "
                              f"{expected} bytes")
    return bytes(out)


class FrameHasher:
    """A hasher for a file of frames: each ``update`` is one whole frame, whose content goes to
    ``content`` (the snapshot's own hasher); ``frames`` hashes the frames as written."""

    def __init__(self, content: Hasher, frames: Optional[Hasher] = None) -> None:
        self.content = content
        self.frames = frames
        self.size = 0            # content bytes so far
        self.stored = 0          # frame bytes so far

    def update(self, frame: Buffer) -> None:
        data = decompress_frame(frame, frame_size(frame))
        self.content.update(data)
        if self.frames is not None:
            self.frames.update(frame)
        self.size += len(data)
        self.stored += len(frame)


def compress_stream(src: Reader, out: Any, level: int = DEFAULT_LEVEL, frame: int = FRAME,
                    content: Optional[Hasher] = None) -> tuple[int, int]:
    """Copy ``src`` into ``out`` (anything with ``write``) as frames of ``frame`` bytes each;
    ``content`` sees the bytes read. Returns (bytes read, bytes written)."""
    read = written = 0
    while True:
        data = src.read(frame)
        if not data:
            return read, written
        if content is not None:
            content.update(data)
        packed = compress_frame(data, level)
        out.write(packed)
        read += len(data)
        written += len(packed)


def decompressing(raw: Reader) -> Reader:
    """A reader of the snapshot inside ``raw`` (a stream of frames), across every frame, with a capped
    window; a damaged stream raises SnapshotCorrupt on ``read``."""
    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        raw, read_across_frames=True, closefd=False)   # type: ignore[arg-type] # it calls only read()
    return _Checked(reader)


class _Checked:
    """zstandard's stream reader, whose errors are SnapshotCorrupt (a damaged or altered object)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._reader.read(size))
        except zstandard.ZstdError as exc:
            raise SnapshotCorrupt(f"the compressed snapshot was altered or damaged: {exc}") from None

    def close(self) -> None:
        self._reader.close()
