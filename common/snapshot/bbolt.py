"""Read-only facts from the bbolt database inside an etcd snapshot, in pure code.

An etcd snapshot is etcd's bbolt file followed by a SHA-256 trailer. A valid
trailer proves the bytes arrived intact, not that they are an etcd database:
any bytes followed by their digest pass. Two facts are read here without any
etcd tool:

- the meta pages (page 0 and 1): bbolt's magic 0xED0CDAED, version 2, a page
  size, and an FNV-1a checksum over the meta fields. bbolt opens a file when
  at least one of them is valid, so the same rule decides "is a bbolt file";
- the ``members`` bucket (etcd >= 3.4 keeps the cluster membership in the
  backend): each member's id, name and peer URLs. The cluster id etcd derives
  at bootstrap is the first 8 bytes of SHA-1 over the sorted member ids, so it
  can be computed from them while the membership is unchanged since then.

Everything is bounded (page numbers inside the file, a depth and page budget),
so a damaged file yields a BoltError, never a hang or a crash.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER_SIZE = 16                  # id u64, flags u16, count u16, overflow u32
META_FIELDS_SIZE = 56                  # magic .. txid, the bytes the checksum covers
BRANCH_PAGE, LEAF_PAGE, META_PAGE = 0x01, 0x02, 0x04
BUCKET_LEAF_FLAG = 0x01
ELEMENT_SIZE = 16                      # branch and leaf page elements are both 16 bytes
BUCKET_HEADER_SIZE = 16                # root pgid u64, sequence u64
PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
HEAD_BYTES = 2 * max(PAGE_SIZES)       # enough for both meta pages at any page size
MAX_DEPTH = 16
MAX_PAGES = 4096
MEMBERS_BUCKET = b"members"

ReadAt = Callable[[int, int], bytes]   # (offset, length) -> bytes (shorter at the end of the data)


class BoltError(ValueError):
    """The bytes are not a readable bbolt database; the message says what is wrong."""


@dataclass(frozen=True)
class BoltMeta:
    page_size: int
    root: int          # page id of the root bucket's tree
    high_water: int    # page ids below this are in use
    txid: int
    order: str         # struct byte order of the file ("<" little endian, ">" big endian)


@dataclass(frozen=True)
class BoltMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]

    @property
    def id_hex(self) -> str:
        return f"{self.id:x}"


def fnv64a(data: bytes) -> int:
    """FNV-1a 64, the checksum bbolt keeps in each meta page."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _parse_meta(data: bytes, offset: int) -> tuple[Optional[BoltMeta], str]:
    """The meta page at ``offset``, or (None, why it is not one)."""
    end = offset + PAGE_HEADER_SIZE + META_FIELDS_SIZE + 8
    if len(data) < end:
        return None, f"only {len(data)} bytes, a bbolt meta page needs {end}"
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data, offset + PAGE_HEADER_SIZE)
        if magic == MAGIC:
            break
    else:
        return None, "no bbolt magic 0xED0CDAED"
    _pgid, flags = struct.unpack_from(order + "QH", data, offset)
    fields = struct.unpack_from(order + "IIIIQQQQQQ", data, offset + PAGE_HEADER_SIZE)
    _magic, version, page_size, _mflags, root, _seq, _freelist, high_water, txid, checksum = fields
    if not flags & META_PAGE:
        return None, f"page flags {flags:#x} are not a meta page's"
    if version != VERSION:
        return None, f"bbolt version {version}, expected {VERSION}"
    if page_size not in PAGE_SIZES and not (512 <= page_size <= 1 << 20 and page_size & (page_size - 1) == 0):
        return None, f"implausible page size {page_size}"
    meta_start = offset + PAGE_HEADER_SIZE
    if fnv64a(data[meta_start:meta_start + META_FIELDS_SIZE]) != checksum:
        return None, "meta checksum does not match"
    if not 2 <= root < high_water:
        return None, f"root page {root} outside the {high_water} pages in use"
    return BoltMeta(page_size, root, high_water, txid, order), ""


def read_meta(head: bytes) -> BoltMeta:
    """The newest valid meta page in the first bytes of a bbolt file (at least the first page).

    Raises BoltError naming what is wrong when neither meta page is valid.
    """
    first, why0 = _parse_meta(head, 0)
    offsets = [first.page_size] if first is not None else list(PAGE_SIZES)
    second, why1 = None, ""
    for off in offsets:
        second, why = _parse_meta(head, off)
        if second is not None:
            break
        why1 = why1 or why
    valid = [m for m in (first, second) if m is not None]
    if not valid:
        raise BoltError(f"not a bbolt database (page 0: {why0}; page 1: {why1})")
    return max(valid, key=lambda m: m.txid)


def meta_problem(head: bytes) -> Optional[str]:
    """None if ``head`` starts a bbolt database, else what is wrong (pure)."""
    try:
        read_meta(head)
    except BoltError as exc:
        return str(exc)
    return None


class _Reader:
    def __init__(self, read_at: ReadAt, size: int, meta: BoltMeta) -> None:
        self.read_at = read_at
        self.size = size
        self.meta = meta
        self.pages = 0

    def page(self, pgid: int) -> bytes:
        ps = self.meta.page_size
        if not 2 <= pgid < self.meta.high_water or (pgid + 1) * ps > self.size:
            raise BoltError(f"page {pgid} is outside the database")
        self.pages += 1
        if self.pages > MAX_PAGES:
            raise BoltError(f"more than {MAX_PAGES} pages visited; the tree is damaged or cyclic")
        head = self.read_at(pgid * ps, ps)
        if len(head) < PAGE_HEADER_SIZE:
            raise BoltError(f"page {pgid} is truncated")
        (overflow,) = struct.unpack_from(self.meta.order + "I", head, 12)
        if overflow:
            length = (overflow + 1) * ps
            if pgid * ps + length > self.size:
                raise BoltError(f"page {pgid} overflows past the end of the database")
            head = self.read_at(pgid * ps, length)
        return head

    def entries(self, buf: bytes, offset: int, depth: int = 0) -> list[tuple[int, bytes, bytes]]:
        """(flags, key, value) of every leaf entry under the page at ``buf[offset:]``."""
        if depth > MAX_DEPTH:
            raise BoltError(f"tree deeper than {MAX_DEPTH}; the database is damaged")
        o = self.meta.order
        if len(buf) < offset + PAGE_HEADER_SIZE:
            raise BoltError("page header is truncated")
        _pgid, flags, count, _overflow = struct.unpack_from(o + "QHHI", buf, offset)
        base = offset + PAGE_HEADER_SIZE
        if len(buf) < base + count * ELEMENT_SIZE:
            raise BoltError(f"page holds {count} elements but is too short for them")
        out: list[tuple[int, bytes, bytes]] = []
        if flags & BRANCH_PAGE:
            for i in range(count):
                _pos, _ksize, child = struct.unpack_from(o + "IIQ", buf, base + i * ELEMENT_SIZE)
                out += self.entries(self.page(child), 0, depth + 1)
        elif flags & LEAF_PAGE:
            for i in range(count):
                elem = base + i * ELEMENT_SIZE
                eflags, pos, ksize, vsize = struct.unpack_from(o + "IIII", buf, elem)
                start = elem + pos
                if start + ksize + vsize > len(buf):
                    raise BoltError("a leaf element points past its page")
                out.append((eflags, buf[start:start + ksize], buf[start + ksize:start + ksize + vsize]))
        else:
            raise BoltError(f"page flags {flags:#x}: neither branch nor leaf")
        return out

    def bucket(self, header: bytes, depth: int) -> list[tuple[int, bytes, bytes]]:
        if len(header) < BUCKET_HEADER_SIZE:
            raise BoltError("bucket header is truncated")
        (root,) = struct.unpack_from(self.meta.order + "Q", header, 0)
        if root == 0:  # an inline bucket: its page follows the header inside the value
            return self.entries(header, BUCKET_HEADER_SIZE, depth + 1)
        return self.entries(self.page(root), 0, depth + 1)


def read_members(read_at: ReadAt, size: int) -> list[BoltMember]:
    """The members etcd recorded in the database's ``members`` bucket ([] if it has none).

    ``size`` is the database's size (a snapshot file without its 32-byte trailer).
    Raises BoltError if the database cannot be read.
    """
    meta = read_meta(read_at(0, min(size, HEAD_BYTES)))
    reader = _Reader(read_at, size, meta)
    members: list[BoltMember] = []
    for flags, key, value in reader.entries(reader.page(meta.root), 0):
        if key != MEMBERS_BUCKET or not flags & BUCKET_LEAF_FLAG:
            continue
        for _flags, mkey, mvalue in reader.bucket(value, 0):
            members.append(_member(mkey, mvalue))
    return sorted(members, key=lambda m: m.id)


def read_file_members(path: Path, db_size: int) -> list[BoltMember]:
    """read_members of a file whose first ``db_size`` bytes are the database (OSError, BoltError)."""
    with open(path, "rb") as fh:
        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)
        return read_members(read_at, db_size)


def _member(key: bytes, value: bytes) -> BoltMember:
    try:
        data = json.loads(value.decode("utf-8"))
        mid = int(data.get("id") or int(key.decode("ascii"), 16))
        name = str(data.get("name") or "")
        urls = tuple(str(u) for u in data.get("peerURLs") or ())
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise BoltError(f"member record {key[:32]!r} is not etcd's JSON: {exc}") from None
    return BoltMember(mid, name, urls)


def cluster_id_of(member_ids: list[int]) -> int:
    """The cluster id etcd derives from its initial members' ids (SHA-1 over the sorted ids)."""
    raw = b"".join(struct.pack(">Q", i) for i in sorted(member_ids))
    (cid,) = struct.unpack(">Q", hashlib.sha1(raw, usedforsecurity=False).digest()[:8])  # etcd's own derivation
    return int(cid)
