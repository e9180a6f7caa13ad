"""Object names of the S3 vault: everything a listing needs is in the key (pure).

As in Gardener's snapstore, the catalog is a bucket listing: no index object
that could go out of step with the objects, and no HEAD request per entry.
A snapshot's key carries its sha256 first (so ``has`` is one prefix listing)
and then tagged fields separated by ``~``, a character no field may hold::

    PREFIX snapshots/<sha256>~t<created ms>~r<revision>~s<size>~c<cluster id>~m<member id>
           ~e<etcd version>~f<source member>~o<original name>~p<pulled ms>~x<revision exact 0|1>
           ~k<kind>[~h<hashkv>~g<its compact revision>][~n<key count>].db[.zst][.age]
    PREFIX bundles/<sha256>.tar.age          the node bundle pulled with that snapshot (agent-encrypted)
    PREFIX pins/<sha256>~<reason, percent-encoded>   a zero-byte keep annotation

The kind (``scheduled``, ``manual``, ``pre-restore``, ``point-in-time``)
follows; keys written before kinds were recorded lack it and parse with an
empty kind (entry.derive_kind decides it from the pin). The hashkv and key
count the source member answered at the snapshot's revision (what a restore
drill checks) follow where they were recorded. ``.zst`` says the object is
the snapshot compressed (zstd frames), ``.age`` that it is age-encrypted
(after compression). Keys this
module does not recognise are not entries (``parse_key`` returns None), so
other objects under the prefix are never touched.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Optional

SNAPSHOTS = "snapshots/"
BUNDLES = "bundles/"
PINS = "pins/"
PLAIN_SUFFIX = ".db"
AGE_SUFFIX = ".db.age"
ZST_SUFFIX = ".zst"
BUNDLE_SUFFIX = ".tar.age"
SEP = "~"
MAX_REASON = 64

_SHA = r"[0-9a-f]{64}"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_FIELDS = (
    ("t", "created_ms", r"[0-9]{1,16}"),
    ("r", "revision", r"[0-9]{1,20}"),
    ("s", "size", r"[0-9]{1,16}"),
    ("c", "cluster_id", r"[0-9a-f]{0,16}"),
    ("m", "member_id", r"[0-9a-f]{0,16}"),
    ("e", "etcd_version", r"[0-9A-Za-z.+-]{0,32}"),
    ("f", "source_member", _NAME),
    ("o", "original_name", _NAME),
    ("p", "pulled_ms", r"[0-9]{1,16}"),
    ("x", "revision_exact", r"[01]"),
)
_KIND = r"scheduled|manual|pre-restore|point-in-time"
_SNAPSHOT_RE = re.compile(
    rf"(?P<sha256>{_SHA})" + "".join(rf"~{tag}(?P<{name}>{pattern})" for tag, name, pattern in _FIELDS)
    + rf"(?:~k(?P<kind>{_KIND}))?" + r"(?:~h(?P<hashkv>[0-9]{1,10})~g(?P<hashkv_compact>-?[0-9]{1,20}))?"
    + r"(?:~n(?P<key_count>[0-9]{1,20}))?" + r"\.db(?P<zst>\.zst)?(?P<age>\.age)?")
_BUNDLE_RE = re.compile(rf"(?P<sha256>{_SHA})\.tar\.age")
_PIN_RE = re.compile(rf"(?P<sha256>{_SHA})~(?P<reason>[A-Za-z0-9%._-]{{1,{3 * MAX_REASON}}})")
_REASON_RE = re.compile(rf"[A-Za-z0-9 ._:/()+-]{{1,{MAX_REASON}}}")
_VERSION_BAD = re.compile(r"[^0-9A-Za-z.+-]")


@dataclass(frozen=True)
class SnapshotName:
    """What a snapshot's key says about it."""

    sha256: str
    created_unix: float
    revision: int
    size: int
    cluster_id: str
    member_id: str
    etcd_version: str
    source_member: str
    original_name: str
    pulled_unix: float
    revision_exact: bool
    encrypted: bool
    kind: str = ""       # "": a key from before kinds were recorded
    hashkv: Optional[int] = None
    hashkv_compact_revision: Optional[int] = None
    key_count: Optional[int] = None
    compressed: bool = False


@dataclass(frozen=True)
class Parsed:
    """One recognised key: a snapshot, a bundle or a pin of ``sha256``."""

    kind: str                     # "snapshot" | "bundle" | "pin"
    sha256: str
    snapshot: Optional[SnapshotName] = None
    reason: Optional[str] = None


def check_reason(reason: str) -> Optional[str]:
    """Pure: None if ``reason`` may annotate a pin, else what is wrong with it."""
    if not _REASON_RE.fullmatch(reason):
        return (f"a pin reason is 1 to {MAX_REASON} characters of letters, digits, spaces and ._:/()+- "
                f"(got {reason[:80]!r})")
    return None


def clean_version(text: str) -> str:
    """etcd's version string as a key may carry it (anything odd becomes '-', at most 32)."""
    return _VERSION_BAD.sub("-", text)[:32]


def snapshot_key(prefix: str, n: SnapshotName) -> str:
    """The key of a snapshot; ValueError names a field that cannot be encoded."""
    values = {
        "created_ms": str(round(n.created_unix * 1000)), "revision": str(n.revision), "size": str(n.size),
        "cluster_id": n.cluster_id, "member_id": n.member_id, "etcd_version": clean_version(n.etcd_version),
        "source_member": n.source_member, "original_name": n.original_name,
        "pulled_ms": str(round(n.pulled_unix * 1000)), "revision_exact": "1" if n.revision_exact else "0",
    }
    if not re.fullmatch(_SHA, n.sha256):
        raise ValueError(f"sha256 {n.sha256!r} is not a sha256 hex digest")
    for _tag, name, pattern in _FIELDS:
        if not re.fullmatch(pattern, values[name]):
            raise ValueError(f"{name} {values[name]!r} cannot be part of an object name (expected {pattern})")
    if n.kind and not re.fullmatch(_KIND, n.kind):
        raise ValueError(f"kind {n.kind!r} cannot be part of an object name (expected {_KIND.replace('|', ', ')})")
    kind = [f"k{n.kind}"] if n.kind else []   # none: as keys were before kinds (read back as derive_kind says)
    drill = [f"h{n.hashkv}", f"g{n.hashkv_compact_revision or 0}"] if n.hashkv is not None else []
    drill += [f"n{n.key_count}"] if n.key_count is not None else []
    body = SEP.join([n.sha256, *(f"{tag}{values[name]}" for tag, name, _ in _FIELDS), *kind, *drill])
    key = f"{prefix}{SNAPSHOTS}{body}{PLAIN_SUFFIX}{ZST_SUFFIX if n.compressed else ''}{'.age' if n.encrypted else ''}"
    parsed = parse_key(prefix, key)
    if parsed is None or parsed.snapshot is None or _recorded(parsed.snapshot) != _recorded(n):
        raise ValueError(f"snapshot {n.sha256[:16]}: its fields do not survive an object name (hashkv "
                         f"{n.hashkv}, compact revision {n.hashkv_compact_revision}, key count {n.key_count})")
    return key


def _recorded(n: SnapshotName) -> tuple[object, ...]:
    """What a name must give back as it was given (times are kept to the millisecond)."""
    return (n.sha256, n.revision, n.size, n.hashkv, n.hashkv_compact_revision if n.hashkv is not None else None,
            n.key_count, n.compressed, n.encrypted)


def bundle_key(prefix: str, sha256: str) -> str:
    return f"{prefix}{BUNDLES}{sha256}{BUNDLE_SUFFIX}"


def pin_key(prefix: str, sha256: str, reason: str) -> str:
    problem = check_reason(reason)
    if problem is not None:
        raise ValueError(problem)
    quoted = urllib.parse.quote(reason, safe="").replace("~", "%7E")
    return f"{prefix}{PINS}{sha256}{SEP}{quoted}"


def _int_or_none(text: Optional[str]) -> Optional[int]:
    return int(text) if text is not None else None


def parse_key(prefix: str, key: str) -> Optional[Parsed]:
    """Pure: what ``key`` is, or None for anything that is not ours."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    if rest.startswith(SNAPSHOTS):
        m = _SNAPSHOT_RE.fullmatch(rest[len(SNAPSHOTS):])
        if m is None:
            return None
        g = m.groupdict()
        return Parsed("snapshot", g["sha256"], snapshot=SnapshotName(
            sha256=g["sha256"], created_unix=int(g["created_ms"]) / 1000, revision=int(g["revision"]),
            size=int(g["size"]), cluster_id=g["cluster_id"], member_id=g["member_id"],
            etcd_version=g["etcd_version"], source_member=g["source_member"], original_name=g["original_name"],
            pulled_unix=int(g["pulled_ms"]) / 1000, revision_exact=g["revision_exact"] == "1",
            encrypted=g["age"] is not None, kind=g["kind"] or "", hashkv=_int_or_none(g["hashkv"]),
            hashkv_compact_revision=_int_or_none(g["hashkv_compact"]), key_count=_int_or_none(g["key_count"]),
            compressed=g["zst"] is not None))
    if rest.startswith(BUNDLES):
        m = _BUNDLE_RE.fullmatch(rest[len(BUNDLES):])
        return Parsed("bundle", m.group("sha256")) if m else None
    if rest.startswith(PINS):
        m = _PIN_RE.fullmatch(rest[len(PINS):])
        if m is None:
            return None
        reason = urllib.parse.unquote(m.group("reason"))
        return Parsed("pin", m.group("sha256"), reason=reason) if check_reason(reason) is None else None
    return None
