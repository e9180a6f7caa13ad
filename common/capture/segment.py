"""Captured changes between snapshots: the segment format (pure encoding, decoding and naming).

Continuous backup keeps every change etcd makes between two full snapshots,
read from etcd's watch API, as **segments**: one file per time slice holding
the events in revision order, each with its original revision and the wall
clock time the capture saw that revision. Replaying the events of every
revision after a snapshot's, each revision as one transaction, rebuilds the
store as it was at any later revision (etcd counts one revision per
transaction, so the replayed revisions are the original ones).

A segment is JSON lines, so an operator can read one with ``jq``:

- a header: ``{"segment": 1, "cluster_id", "member", "first", "last"}``
  (``first``/``last``: the revision range, both inclusive);
- one line per event: ``{"r": revision, "t": unix ms, "e": "put"|"del",
  "k": key (base64), "v": value (base64, puts), "l": lease id (0: none)}``;
  and ``{"r", "t", "e": "lease", "l": id, "ttl": seconds}`` for a lease a put
  used whose TTL the capture could read (the replay grants it again);
- a trailer: ``{"end": true, "events": N, "sha256": hex of every byte before
  the trailer line}``: a segment without a trailer, or whose digest differs,
  is refused whole.

Its name carries the revision and time range, so a listing alone tells the
restorable window: ``seg-<first:020d>-<last:020d>-<first ms>-<last ms>.jsonl``.
A **gap** (the watch found its start revision compacted away) is recorded as
a segment of no events whose header says ``gap: true``: the revisions it
covers cannot be replayed, so no point inside it can be restored.

Why by hand: the record is a handful of fields; a serialization library
would add a dependency without adding safety, and JSON keeps the files
readable with standard tools.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Protocol, TypeVar

FORMAT = 1
PUT, DELETE, LEASE = "put", "del", "lease"
NAME_RE = re.compile(r"^seg-(\d{20})-(\d{20})-(\d{1,16})-(\d{1,16})(-gap)?\.jsonl$")


class SegmentError(ValueError):
    """A segment that cannot be read whole (truncated, altered, malformed)."""


@dataclass(frozen=True)
class Event:
    """One change at one revision; ``kind`` put, del or lease (a lease's TTL, for the replay)."""

    revision: int
    time_ms: int
    kind: str
    key: bytes = b""
    value: bytes = b""
    lease: int = 0
    ttl: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"r": self.revision, "t": self.time_ms, "e": self.kind}
        if self.kind == LEASE:
            out.update(l=self.lease, ttl=self.ttl)
            return out
        out["k"] = base64.b64encode(self.key).decode("ascii")
        if self.kind == PUT:
            out["v"] = base64.b64encode(self.value).decode("ascii")
            out["l"] = self.lease
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> Event:
        if not isinstance(data, dict):
            raise SegmentError(f"{where}: an event is a JSON object")
        try:
            kind, revision, time_ms = data["e"], int(data["r"]), int(data["t"])
            if kind == LEASE:
                return cls(revision, time_ms, LEASE, lease=int(data["l"]), ttl=int(data["ttl"]))
            if kind not in (PUT, DELETE):
                raise SegmentError(f"{where}: event kind {kind!r} is not put, del or lease")
            key = base64.b64decode(data["k"], validate=True)
            value = base64.b64decode(data["v"], validate=True) if kind == PUT else b""
            return cls(revision, time_ms, kind, key, value, int(data.get("l", 0)) if kind == PUT else 0)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SegmentError):
                raise
            raise SegmentError(f"{where}: malformed event ({exc})") from None


@dataclass(frozen=True)
class SegmentInfo:
    """What a segment's name says: its revision range, its time range, and whether it is a gap."""

    first: int
    last: int
    first_ms: int
    last_ms: int
    gap: bool = False

    @property
    def name(self) -> str:
        return (f"seg-{self.first:020d}-{self.last:020d}-{self.first_ms}-{self.last_ms}"
                + ("-gap" if self.gap else "") + ".jsonl")

    @classmethod
    def parse(cls, name: str) -> Optional[SegmentInfo]:
        m = NAME_RE.match(name)
        if m is None:
            return None
        first, last, first_ms, last_ms = (int(m.group(i)) for i in range(1, 5))
        if last < first or last_ms < first_ms:
            return None
        return cls(first, last, first_ms, last_ms, gap=m.group(5) is not None)


def encode(events: list[Event], *, cluster_id: str, member: str, first: int, last: int,
           gap: bool = False, at_ms: Optional[int] = None) -> tuple[SegmentInfo, bytes]:
    """A segment of ``events`` covering revisions ``first``..``last`` (events sorted, inside the range);
    ``at_ms`` stamps one without events (a gap: when it was found)."""
    if last < first:
        raise ValueError(f"a segment covers revisions first..last, got {first}..{last}")
    for a, b in zip(events, events[1:]):
        if b.revision < a.revision:
            raise ValueError("events must be in revision order")
    if events and (events[0].revision < first or events[-1].revision > last):
        raise ValueError(f"events {events[0].revision}..{events[-1].revision} outside {first}..{last}")
    times = [e.time_ms for e in events] or [at_ms or 0]
    info = SegmentInfo(first, last, min(times), max(times), gap)
    header = {"segment": FORMAT, "cluster_id": cluster_id, "member": member, "first": first, "last": last,
              "gap": gap}
    body = "".join(json.dumps(x, separators=(",", ":")) + "\n"
                   for x in [header, *(e.to_json() for e in events)]).encode()
    trailer = json.dumps({"end": True, "events": len(events), "sha256": hashlib.sha256(body).hexdigest()},
                         separators=(",", ":")) + "\n"
    return info, body + trailer.encode()


@dataclass(frozen=True)
class Segment:
    cluster_id: str
    member: str
    first: int
    last: int
    gap: bool
    events: tuple[Event, ...]


def decode(data: bytes, where: str = "segment") -> Segment:
    """The whole segment, checked: its trailer's digest and count, its header, every event in range and
    order. SegmentError naming ``where`` otherwise."""
    end = data.rstrip(b"\n").rfind(b"\n") + 1
    body, trailer_line = data[:end], data[end:]
    try:
        trailer = json.loads(trailer_line)
    except ValueError:
        raise SegmentError(f"{where}: no trailer (truncated?)") from None
    if not isinstance(trailer, dict) or trailer.get("end") is not True:
        raise SegmentError(f"{where}: no trailer (truncated?)")
    if trailer.get("sha256") != hashlib.sha256(body).hexdigest():
        raise SegmentError(f"{where}: its sha256 differs from the one its trailer records (altered or damaged)")
    lines = body.decode("utf-8", errors="strict").splitlines()
    try:
        header = json.loads(lines[0])
        first, last = int(header["first"]), int(header["last"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise SegmentError(f"{where}: no readable header") from None
    if header.get("segment") != FORMAT:
        raise SegmentError(f"{where}: segment format {header.get('segment')!r}, this etcdguard reads {FORMAT}")
    events = tuple(Event.from_json(json.loads(line), f"{where} line {i}") for i, line in enumerate(lines[1:], 2))
    if len(events) != trailer.get("events"):
        raise SegmentError(f"{where}: {len(events)} events, the trailer says {trailer.get('events')}")
    for e in events:
        if not first <= e.revision <= last:
            raise SegmentError(f"{where}: event at revision {e.revision} outside {first}..{last}")
    return Segment(str(header.get("cluster_id", "")), str(header.get("member", "")), first, last,
                   bool(header.get("gap")), events)


class _Revisioned(Protocol):
    @property
    def revision(self) -> int: ...


_E = TypeVar("_E", bound=_Revisioned)


def by_revision(events: Iterable[_E]) -> Iterator[tuple[int, list[_E]]]:
    """Events (a segment's, or etcd's watch events) grouped by revision, in order: each group is one
    transaction to replay, or one revision to capture."""
    group: list[_E] = []
    for e in events:
        if group and e.revision != group[0].revision:
            yield group[0].revision, group
            group = []
        group.append(e)
    if group:
        yield group[0].revision, group


@dataclass(frozen=True)
class Window:
    """The restorable window: revisions (and times) from ``first`` to ``last`` with no gap inside,
    the gaps seen before it, and where the segments stop matching up."""

    first: Optional[int]
    last: Optional[int]
    first_ms: Optional[int]
    last_ms: Optional[int]
    gaps: tuple[tuple[int, int], ...] = ()


def window(infos: Iterable[SegmentInfo], base_revision: int) -> Window:
    """Pure: from a snapshot at ``base_revision``, how far the contiguous segments reach (every revision
    after the snapshot covered, no gap). Gaps and holes end the window; they are listed."""
    ordered = sorted(infos, key=lambda i: (i.first, i.last))
    reach = base_revision
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None
    gaps = tuple((i.first, i.last) for i in ordered if i.gap)
    for info in ordered:
        if info.last <= reach:
            continue
        if info.first > reach + 1 or info.gap:
            break
        reach = info.last
        first_ms = info.first_ms if first_ms is None else first_ms
        last_ms = info.last_ms
    if reach == base_revision:
        return Window(base_revision, base_revision, None, None, gaps)
    return Window(base_revision, reach, first_ms, last_ms, gaps)
