"""etcd's watch and lease-TTL messages, encoded and read by hand (pure), in pbwire's way.

Continuous backup reads every change etcd makes from its watch API
(``/etcdserverpb.Watch/Watch``, a bidirectional stream) and the TTL of each
lease a put carries (``LeaseTimeToLive``), so a replay can grant it again.
Only the fields that job needs are read; the rest are skipped.

Messages (field numbers from etcd's rpc.proto and kv.proto):
  WatchRequest       {1 create_request, 2 cancel_request, 3 progress_request}
  WatchCreateRequest {1 key, 2 range_end, 3 start_revision, 4 progress_notify, 5 filters,
                      6 prev_kv, 7 watch_id, 8 fragment}
  WatchResponse      {1 header, 2 watch_id, 3 created, 4 canceled, 5 compact_revision,
                      6 cancel_reason, 7 fragment, 11 events (repeated mvccpb.Event)}
  mvccpb.Event       {1 type (PUT 0, DELETE 1), 2 kv, 3 prev_kv}
  mvccpb.KeyValue    {1 key, 2 create_revision, 3 mod_revision, 4 version, 5 value, 6 lease}
  LeaseTimeToLiveRequest  {1 ID, 2 keys}
  LeaseTimeToLiveResponse {1 header, 2 ID, 3 TTL, 4 grantedTTL, 5 keys}

A watch on every key is ``key = "\\0"``, ``range_end = "\\0"`` (etcd's rule:
from the smallest key to the end of the keyspace). A delete's ``kv`` holds
the key and, as ``mod_revision``, the revision of the delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from etcdguard.common.etcd import pbwire
from etcdguard.common.etcd.pbwire import Header, encode_bytes_field, encode_varint_field

EVERY_KEY = b"\x00"
PUT, DELETE = 0, 1


@dataclass(frozen=True)
class WatchEvent:
    """One change: ``deleted`` or a put of ``value`` (with ``lease``, 0: none), at ``revision``."""

    revision: int
    key: bytes
    deleted: bool = False
    value: bytes = b""
    lease: int = 0


@dataclass(frozen=True)
class WatchResponse:
    header: Header
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0       # > 0: the start revision was compacted away (the watch is cancelled)
    cancel_reason: str = ""
    events: tuple[WatchEvent, ...] = ()

    @property
    def synced(self) -> bool:
        """Every change up to ``header.revision`` has been sent on this stream: a progress notification
        (no events) or a batch that reaches the store's revision."""
        return not self.events or self.events[-1].revision >= self.header.revision


def create_request(start_revision: int, *, key: bytes = EVERY_KEY, range_end: bytes = EVERY_KEY,
                   progress_notify: bool = True, prev_kv: bool = False) -> bytes:
    """A WatchRequest creating a watch of [key, range_end) from ``start_revision`` (0: from now)."""
    create = (encode_bytes_field(1, key) + (encode_bytes_field(2, range_end) if range_end else b"")
              + encode_varint_field(3, start_revision) + encode_varint_field(4, int(progress_notify))
              + encode_varint_field(6, int(prev_kv)))
    return encode_bytes_field(1, create)


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# The watch's replies are read by hand-inlined code rather than pbwire.fields: at a thousand revisions a
# second, one reply per revision, the generic reader was most of the capturing agent's CPU (58 us a reply
# of one 1 KB put, against 12 us here). Truncated input raises IndexError inside; the callers turn it into
# WireError.

def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 63:
            raise pbwire.WireError("varint too long")


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == pbwire.VARINT:
        return _uvarint(buf, pos)[1]
    if wire == pbwire.I64:
        return pos + 8
    if wire == pbwire.I32:
        return pos + 4
    if wire == pbwire.LEN:
        length, pos = _uvarint(buf, pos)
        return pos + length
    raise pbwire.WireError(f"unsupported wire type {wire}")


def _kv(buf: bytes, pos: int, end: int) -> tuple[bytes, int, bytes, int]:
    """(key, mod_revision, value, lease) of a KeyValue at buf[pos:end]."""
    key, value = b"", b""
    revision = lease = 0
    while pos < end:
        tag, pos = _uvarint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == pbwire.LEN and number in (1, 5):
            length, pos = _uvarint(buf, pos)
            if number == 1:
                key = buf[pos:pos + length]
            else:
                value = buf[pos:pos + length]
            pos += length
        elif wire == pbwire.VARINT and number in (3, 6):
            v, pos = _uvarint(buf, pos)
            if number == 3:
                revision = v
            else:
                lease = _int64(v)
        else:
            pos = _skip(buf, pos, wire)
    if pos != end:
        raise pbwire.WireError("truncated key-value")
    return key, revision, value, lease


def _event(buf: bytes, pos: int, end: int) -> WatchEvent:
    kind = PUT
    kv = (b"", 0, b"", 0)
    while pos < end:
        tag, pos = _uvarint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 1 and wire == pbwire.VARINT:
            kind, pos = _uvarint(buf, pos)
        elif number == 2 and wire == pbwire.LEN:
            length, pos = _uvarint(buf, pos)
            kv = _kv(buf, pos, pos + length)
            pos += length
        else:
            pos = _skip(buf, pos, wire)
    key, revision, value, lease = kv
    if kind == DELETE:
        return WatchEvent(revision, key, deleted=True)
    if kind != PUT:
        raise pbwire.WireError(f"watch event type {kind} is neither PUT nor DELETE")
    return WatchEvent(revision, key, value=value, lease=lease)


def _header(buf: bytes, pos: int, end: int) -> Header:
    values = [0, 0, 0, 0, 0]
    while pos < end:
        tag, pos = _uvarint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == pbwire.VARINT:
            value, pos = _uvarint(buf, pos)
            if 1 <= number <= 4:
                values[number] = value
        else:
            pos = _skip(buf, pos, wire)
    return Header(values[1], values[2], values[3], values[4])


def parse_event(message: Union[bytes, memoryview]) -> WatchEvent:
    buf = bytes(message)
    try:
        return _event(buf, 0, len(buf))
    except IndexError:
        raise pbwire.WireError("truncated watch event") from None


def parse_watch_response(message: bytes) -> WatchResponse:
    buf = bytes(message)
    header = Header()
    ints = {2: 0, 3: 0, 4: 0, 5: 0}
    reason = ""
    events = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            tag, pos = _uvarint(buf, pos)
            number, wire = tag >> 3, tag & 7
            if wire == pbwire.LEN:
                length, pos = _uvarint(buf, pos)
                stop = pos + length
                if stop > end:
                    raise pbwire.WireError("truncated length-delimited field")
                if number == 11:
                    events.append(_event(buf, pos, stop))
                elif number == 1:
                    header = _header(buf, pos, stop)
                elif number == 6:
                    reason = buf[pos:stop].decode("utf-8", "replace")
                pos = stop
            elif wire == pbwire.VARINT:
                value, pos = _uvarint(buf, pos)
                if number in ints:
                    ints[number] = value
            else:
                pos = _skip(buf, pos, wire)
    except IndexError:
        raise pbwire.WireError("truncated watch response") from None
    if pos != end:
        raise pbwire.WireError("truncated watch response")
    return WatchResponse(header, _int64(ints[2]), bool(ints[3]), bool(ints[4]), _int64(ints[5]), reason,
                         tuple(events))


def lease_ttl_request(lease_id: int) -> bytes:
    return encode_varint_field(1, lease_id)


def parse_lease_ttl(message: bytes) -> int:
    """The TTL a lease was granted with, in seconds; -1 when the lease has expired or was revoked."""
    ttl, granted = 0, 0
    for n, v in pbwire.fields(message):
        if n == 3 and isinstance(v, int):
            ttl = _int64(v)
        elif n == 4 and isinstance(v, int):
            granted = _int64(v)
    return -1 if ttl < 0 else granted
