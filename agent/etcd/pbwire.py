"""Just enough protobuf wire format to take the blob out of a SnapshotResponse.

The snapshot stream is ~10,000 messages per 300 MB; decoding each with the
pure-Python protobuf runtime (which python-etcd3 0.12 requires) costs more
than the network. SnapshotResponse is {1: header, 2: remaining_bytes, 3: blob,
4: version}; we skip everything but field 3 and return it without a copy.
"""

from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def field_bytes(message: bytes, number: int) -> memoryview:
    """The (last) length-delimited field ``number`` of a message; empty if absent."""
    buf = memoryview(message)
    pos = 0
    found = buf[0:0]
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            _, pos = _varint(buf, pos)
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        elif wire == LEN:
            length, pos = _varint(buf, pos)
            end = pos + length
            if end > len(buf):
                raise WireError("truncated length-delimited field")
            if field == number:
                found = buf[pos:end]
            pos = end
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise WireError("truncated field")
    return found


def snapshot_blob(message: bytes) -> memoryview:
    return field_bytes(message, 3)
