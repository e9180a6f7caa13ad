"""One revision's watch events as segment lines (pure): what the agent buffers and the coordinator stores.

The format is the segment's (common/capture/segment.py): one JSON object per
event with its original revision and the time the capture saw it. A put
with a lease the capture has not described yet in this session is preceded
by a ``lease`` line with the TTL the lease was granted with, when etcd still
knows it (``ttl_of`` returns None otherwise: the lease expired or was
revoked, and the replay puts the key without it and says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Callable, Optional

from etcdguard.common.capture.segment import DELETE, LEASE, PUT, Event
from etcdguard.common.etcd.watchwire import WatchEvent

TtlOf = Callable[[int], Optional[int]]


def by_revision(events: Iterable[WatchEvent]) -> Iterator[tuple[int, list[WatchEvent]]]:
    group: list[WatchEvent] = []
    for e in events:
        if group and e.revision != group[0].revision:
            yield group[0].revision, group
            group = []
        group.append(e)
    if group:
        yield group[0].revision, group


def revision_lines(revision: int, events: list[WatchEvent], time_ms: int, ttl_of: TtlOf,
                   described: MutableMapping[int, int]) -> tuple[int, bytes]:
    """(line count, lines) of one revision's events; ``described`` (lease -> TTL) is updated with every
    lease this revision describes, so each is described once."""
    out: list[Event] = []
    for e in events:
        if e.lease and not e.deleted and e.lease not in described:
            ttl = ttl_of(e.lease)
            if ttl is not None and ttl > 0:
                described[e.lease] = ttl
                out.append(Event(revision, time_ms, LEASE, lease=e.lease, ttl=ttl))
    for e in events:
        out.append(Event(revision, time_ms, DELETE, e.key) if e.deleted
                   else Event(revision, time_ms, PUT, e.key, e.value, e.lease))
    text = "".join(json.dumps(x.to_json(), separators=(",", ":")) + "\n" for x in out)
    return len(out), text.encode("ascii")
