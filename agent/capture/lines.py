"""One revision's watch events as segment lines (pure): what the agent buffers and the coordinator stores.

The format is the segment's (common/capture/segment.py): one JSON object per
event with its original revision and the time the capture saw it. A put
with a lease the capture has not described yet in this session is preceded
by a ``lease`` line with the TTL the lease was granted with, when etcd still
knows it (``ttl_of`` returns None otherwise: the lease expired or was
revoked, and the replay puts the key without it and says so).
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import MutableMapping
from typing import Callable, Optional

from etcdguard.common.etcd.watchwire import WatchEvent

TtlOf = Callable[[int], Optional[int]]


def revision_lines(revision: int, events: list[WatchEvent], time_ms: int, ttl_of: TtlOf,
                   described: MutableMapping[int, int]) -> tuple[int, bytes]:
    """(line count, lines) of one revision's events; ``described`` (lease -> TTL) is updated with every
    lease this revision describes, so each is described once.

    The lines are formatted directly (base64 is JSON-safe), not through json.dumps: at a thousand
    revisions a second this is a measurable part of the capturing agent's CPU. common/capture/segment.py's
    Event.from_json reads them back (a test holds the two together)."""
    out: list[bytes] = []
    for e in events:
        if e.lease and not e.deleted and e.lease not in described:
            ttl = ttl_of(e.lease)
            if ttl is not None and ttl > 0:
                described[e.lease] = ttl
                out.append(b'{"r":%d,"t":%d,"e":"lease","l":%d,"ttl":%d}\n' % (revision, time_ms, e.lease, ttl))
    for e in events:
        key = b2a_base64(e.key, newline=False)
        if e.deleted:
            out.append(b'{"r":%d,"t":%d,"e":"del","k":"%s"}\n' % (revision, time_ms, key))
        else:
            out.append(b'{"r":%d,"t":%d,"e":"put","k":"%s","v":"%s","l":%d}\n'
                       % (revision, time_ms, key, b2a_base64(e.value, newline=False), e.lease))
    return len(out), b"".join(out)
