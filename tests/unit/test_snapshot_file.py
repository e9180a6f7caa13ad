import hashlib
import os

import pytest
from etcdguard.common.base.errors import SnapshotCorrupt
from etcdguard.common.snapshot.integrity import TrailerHasher, verify_file


def fake_snapshot(size: int) -> bytes:
    body = os.urandom(size)
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("chunking", [1, 7, 31, 32, 33, 4096, 10**6])
def test_streaming_hasher_matches_for_any_chunking(chunking):
    data = fake_snapshot(20_000)
    h = TrailerHasher()
    for i in range(0, len(data), chunking):
        h.update(data[i:i + chunking])
    assert h.trailer_ok()
    assert h.sha256 == hashlib.sha256(data).hexdigest()
    assert h.size == len(data)


def test_verify_file_accepts_good_and_catches_one_flipped_byte(tmp_path):
    data = bytearray(fake_snapshot(100_000))
    f = tmp_path / "s.db"
    f.write_bytes(bytes(data))
    d = verify_file(f)
    assert d.size == len(data)
    for position in (0, 50_000, len(data) - 33, len(data) - 1):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        f.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotCorrupt, match="trailer does not match"):
            verify_file(f)


def test_verify_checks_recorded_sha_and_size(tmp_path):
    f = tmp_path / "s.db"
    f.write_bytes(fake_snapshot(1000))
    with pytest.raises(SnapshotCorrupt, match="differs from the recorded"):
        verify_file(f, expect_sha256="0" * 64)
    with pytest.raises(SnapshotCorrupt, match="size"):
        verify_file(f, expect_size=5)


def test_truncated_and_tiny_and_missing(tmp_path):
    f = tmp_path / "s.db"
    f.write_bytes(fake_snapshot(1000)[:-1])
    with pytest.raises(SnapshotCorrupt):
        verify_file(f)
    f.write_bytes(b"x" * 10)
    with pytest.raises(SnapshotCorrupt, match="too short"):
        verify_file(f)
    with pytest.raises(SnapshotCorrupt, match="no such file"):
        verify_file(tmp_path / "nope.db")


def test_pbwire_extracts_the_blob_like_protobuf():
    import warnings

    from etcdguard.common.etcd.pbwire import WireError, snapshot_blob

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from etcd3 import etcdrpc

    blob = os.urandom(40_000)
    msg = etcdrpc.SnapshotResponse(remaining_bytes=123456789, blob=blob)
    msg.header.cluster_id = 2**63 + 5
    msg.header.revision = 77
    data = msg.SerializeToString()
    assert bytes(snapshot_blob(data)) == blob
    assert bytes(snapshot_blob(etcdrpc.SnapshotResponse(remaining_bytes=1).SerializeToString())) == b""
    with pytest.raises(WireError):
        snapshot_blob(data[:-1])
