"""zstd frames for snapshots: what the agent sends, the vault stores and every reader decompresses (pure)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import zstandard
from etcdguard.common.base.errors import SnapshotCorrupt
from etcdguard.common.snapshot import compression as c
from etcdguard.common.snapshot.integrity import KnownSizeDigest
from etcdguard.common.wire.protocol import MAX_CHUNK, MAX_COMPRESSED_CHUNK, ProtocolError, validate
from etcdguard.common.wire.protocol import OPS as WIRE_OPS


def snapshot_like(size: int) -> bytes:
    """Bytes with an etcd trailer: repetitive (a database) and random (values) parts."""
    body = (b"/registry/pods/ns-001/pod-" + os.urandom(24)) * (size // 100) + os.urandom(size // 3)
    body = body[: size - 32]
    return body + hashlib.sha256(body).digest()


def test_frames_concatenated_are_one_zstd_stream_of_the_snapshot():
    data = snapshot_like(3_000_000)
    frames = [c.compress_frame(data[i:i + c.FRAME]) for i in range(0, len(data), c.FRAME)]
    assert sum(map(len, frames)) < len(data)
    assert [c.frame_size(f) for f in frames] == [1 << 20, 1 << 20, len(data) - 2 * (1 << 20)]
    joined = b"".join(frames)
    assert c.decompressing(io.BytesIO(joined)).read() == data
    # what `zstd -d` does with the vault object: the plain zstandard API reads it across frames too
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(joined), read_across_frames=True).read() == data


def test_a_frame_hasher_checks_the_snapshot_by_what_the_frames_decompress_to():
    data = snapshot_like(2_500_000)
    digest = KnownSizeDigest(len(data))
    frames = hashlib.sha256()
    hasher = c.FrameHasher(digest, frames)
    packed = [c.compress_frame(data[i:i + 700_000], 3) for i in range(0, len(data), 700_000)]
    for f in packed:
        hasher.update(f)
    assert digest.finish() == (hashlib.sha256(data).hexdigest(), True)
    assert (hasher.size, hasher.stored) == (len(data), sum(map(len, packed)))
    assert frames.hexdigest() == hashlib.sha256(b"".join(packed)).hexdigest()


def test_a_frame_must_be_exactly_the_chunk_it_claims_to_be():
    frame = c.compress_frame(b"x" * 1000)
    assert c.decompress_frame(frame, 1000) == b"x" * 1000
    with pytest.raises(SnapshotCorrupt, match="declares 1000 bytes, the chunk it carries has 999"):
        c.decompress_frame(frame, 999)
    with pytest.raises(SnapshotCorrupt, match="exactly one frame"):
        c.decompress_frame(frame + frame, 1000)                    # a second frame smuggled behind the first
    damaged = bytearray(frame)
    damaged[-2] ^= 0xFF                                               # the frame's checksum no longer matches
    with pytest.raises(SnapshotCorrupt, match="damaged zstd frame"):
        c.decompress_frame(bytes(damaged), 1000)
    with pytest.raises(SnapshotCorrupt, match="not a zstd frame"):
        c.frame_size(b"plain bytes, not a frame")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    stream = unsized.compress(b"y" * 100) + unsized.flush()
    with pytest.raises(SnapshotCorrupt, match="without its content size"):
        c.frame_size(stream)


def test_a_damaged_object_is_refused_as_it_is_read():
    data = snapshot_like(1_500_000)
    out = io.BytesIO()
    assert c.compress_stream(io.BytesIO(data), out)[0] == len(data)
    packed = bytearray(out.getvalue())
    packed[len(packed) // 2] ^= 0x55
    with pytest.raises(SnapshotCorrupt, match="compressed snapshot was altered or damaged"):
        c.decompressing(io.BytesIO(bytes(packed))).read()


def test_a_window_larger_than_any_frame_needs_is_refused():
    params = zstandard.ZstdCompressionParameters(window_log=27, write_content_size=False)
    big = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = big.compress(os.urandom(1 << 16)) + big.flush()   # declares a 128 MiB window, as a hostile object may
    with pytest.raises(SnapshotCorrupt):
        c.decompressing(io.BytesIO(data)).read()


def test_incompressible_chunks_of_the_largest_compressed_size_fit_a_data_frame():
    assert len(c.compress_frame(os.urandom(MAX_COMPRESSED_CHUNK), c.MAX_LEVEL)) <= MAX_CHUNK
    assert c.bound(MAX_COMPRESSED_CHUNK) <= MAX_CHUNK


def test_the_fetch_op_takes_a_level_and_bounds_a_compressed_chunk():
    spec = WIRE_OPS["snapshot.fetch"]
    args = validate(spec.args, {"name": "snap.db", "offset": 0, "size": 1 << 20, "zstd_level": 3})
    assert args["zstd_level"] == 3
    assert spec.check is not None
    spec.check(args, None)
    with pytest.raises(ProtocolError, match="a compressed chunk is at most"):
        spec.check({**args, "size": MAX_CHUNK}, None)
    spec.check({"name": "snap.db", "offset": 0, "size": MAX_CHUNK}, None)   # plain: the full data frame
    with pytest.raises(ProtocolError, match="out of range"):
        validate(spec.args, {"name": "snap.db", "offset": 0, "size": 1, "zstd_level": 22})
