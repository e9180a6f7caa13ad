"""The pure bbolt reader: meta pages and the members bucket, on databases built here byte by byte.

The layout written by ``build_db`` is bbolt's (page header, meta, leaf and
branch elements, inline and page-backed buckets); the integration tests read
real etcd 3.4 and 3.5 snapshots with the same code.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Optional

import pytest
from etcdguard.common.base.errors import SnapshotCorrupt
from etcdguard.common.snapshot import bbolt
from etcdguard.common.snapshot.integrity import FileDigest, Recorded, sidecar_problems, verify_file, verify_restorable
from etcdguard.common.snapshot.sidecar import SnapshotMeta

PS = 4096
# Member ids and cluster id of a real 3-member etcd 3.4 cluster (etcdctl member list -w json).
REAL_IDS = [4519498317916781201, 12632189586792854276, 17259863615109801852]
REAL_CLUSTER_ID = 3246871415094108803


def header(pgid: int, flags: int, count: int, overflow: int = 0) -> bytes:
    return struct.pack("<QHHI", pgid, flags, count, overflow)


def meta_page(pgid: int, root: int, high_water: int, txid: int, magic: int = bbolt.MAGIC) -> bytes:
    fields = struct.pack("<IIIIQQQQQ", magic, 2, PS, 0, root, 0, 2**64 - 1, high_water, txid)
    body = header(pgid, bbolt.META_PAGE, 0) + fields + struct.pack("<Q", bbolt.fnv64a(fields))
    return body.ljust(PS, b"\0")


def leaf(pgid: int, entries: list[tuple[int, bytes, bytes]], pad: bool = True) -> bytes:
    elems, data = b"", b""
    n = len(entries)
    for i, (flags, key, value) in enumerate(entries):
        pos = (n - i) * bbolt.ELEMENT_SIZE + len(data)   # from this element to its key
        elems += struct.pack("<IIII", flags, pos, len(key), len(value))
        data += key + value
    page = header(pgid, bbolt.LEAF_PAGE, n) + elems + data
    return page.ljust(PS, b"\0") if pad else page


def branch(pgid: int, children: list[tuple[bytes, int]]) -> bytes:
    elems, data = b"", b""
    n = len(children)
    for i, (key, child) in enumerate(children):
        elems += struct.pack("<IIQ", (n - i) * bbolt.ELEMENT_SIZE + len(data), len(key), child)
        data += key
    return (header(pgid, bbolt.BRANCH_PAGE, n) + elems + data).ljust(PS, b"\0")


def member_entries(ids: list[int]) -> list[tuple[int, bytes, bytes]]:
    return [(0, f"{i:x}".encode(), json.dumps({"id": i, "peerURLs": [f"http://10.0.0.{n}:2380"],
                                              "name": f"m{n}"}).encode())
            for n, i in enumerate(ids, 1)]


def build_db(ids: list[int], inline: bool = True, members_root: Optional[int] = None) -> bytes:
    """meta 0/1, page 2 the root bucket's leaf (key, members), page 3 the members' leaf if not inline."""
    if inline:
        members_value = struct.pack("<QQ", 0, 0) + leaf(0, member_entries(ids), pad=False)
        pages = [leaf(2, [(1, b"key", struct.pack("<QQ", 0, 0) + leaf(0, [], pad=False)),
                          (1, b"members", members_value)])]
    else:
        root = 3 if members_root is None else members_root
        pages = [leaf(2, [(1, b"members", struct.pack("<QQ", root, 0))]), leaf(3, member_entries(ids))]
    hw = 2 + len(pages)
    return meta_page(0, 2, hw, 4) + meta_page(1, 2, hw, 5) + b"".join(pages)


def snapshot_of(db: bytes) -> bytes:
    return db + hashlib.sha256(db).digest()


def members(db: bytes) -> list[bbolt.BoltMember]:
    return bbolt.read_members(lambda off, n: db[off:off + n], len(db))


def test_meta_pages_accept_bbolt_and_refuse_other_bytes():
    db = build_db(REAL_IDS)
    assert bbolt.meta_problem(db[: 2 * PS]) is None
    assert bbolt.read_meta(db).txid == 5           # the newer of the two valid metas
    for junk in (b"hello", b"\0" * 3 * PS, bytes(range(256)) * 64):
        problem = bbolt.meta_problem(junk)
        assert problem is not None and "not a bbolt database" in problem


def test_one_damaged_meta_page_is_tolerated_two_are_not():
    db = bytearray(build_db(REAL_IDS))
    db[PS + 40] ^= 0xFF                              # page 1: checksum no longer matches
    assert bbolt.read_meta(bytes(db)).txid == 4
    db[40] ^= 0xFF                                   # page 0 too
    problem = bbolt.meta_problem(bytes(db))
    assert problem is not None and "checksum" in problem
    wrong_magic = meta_page(0, 2, 3, 1, magic=0xDEADBEEF) + meta_page(1, 2, 3, 1, magic=0xDEADBEEF)
    assert "magic" in (bbolt.meta_problem(wrong_magic) or "")


@pytest.mark.parametrize("inline", [True, False])
def test_members_and_the_cluster_id_etcd_derives_from_them(inline):
    found = members(build_db(REAL_IDS, inline=inline))
    assert [m.id for m in found] == sorted(REAL_IDS)
    assert sorted(m.name for m in found) == ["m1", "m2", "m3"]
    assert found[0].peer_urls == ("http://10.0.0.1:2380",)
    assert bbolt.cluster_id_of([m.id for m in found]) == REAL_CLUSTER_ID
    assert bbolt.cluster_id_of(list(reversed(REAL_IDS))) == REAL_CLUSTER_ID   # order does not matter


def test_damaged_trees_are_errors_not_hangs():
    with pytest.raises(bbolt.BoltError, match="outside the database"):
        members(build_db(REAL_IDS, inline=False, members_root=99))
    # a branch page whose child is itself: bounded by depth, never a loop
    cyclic = bytearray(build_db(REAL_IDS, inline=False))
    cyclic[3 * PS: 4 * PS] = branch(3, [(b"a", 3)])
    with pytest.raises(bbolt.BoltError, match=r"deeper|pages visited"):
        members(bytes(cyclic))


def test_verify_restorable_refuses_any_bytes_with_a_valid_trailer(tmp_path):
    hello = tmp_path / "hello.db"
    hello.write_bytes(snapshot_of(b"hello"))
    verify_file(hello)                               # the trailer alone passes...
    with pytest.raises(SnapshotCorrupt, match=r"hello\.db: not an etcd snapshot"):
        verify_restorable(hello)                     # ...but it is not a database
    good = tmp_path / "good.db"
    good.write_bytes(snapshot_of(build_db(REAL_IDS)))
    check = verify_restorable(good)
    assert check.computed_cluster_id == f"{REAL_CLUSTER_ID:x}"
    assert check.revision is None and check.tool is None   # no etcd tool given


def _recorded(**kw: object) -> Recorded:
    meta: dict[str, object] = dict(name="s.db", path="/s.db", size=100, sha256="ab" * 32, revision=42,
                                   created_at="", created_unix=0.0, member="m1", member_id="1",
                                   cluster_id="2", etcd_version="3.5.16", duration_seconds=0.0,
                                   revision_source="snapshot-status")
    meta.update(kw)
    return Recorded.from_sidecar(SnapshotMeta(**meta).to_json(), "s.db.json")  # type: ignore[arg-type]


def test_sidecar_comparison():
    same = FileDigest(100, "ab" * 32, True)
    assert sidecar_problems(_recorded(), same, 42) == []
    assert sidecar_problems(_recorded(), same, None) == []               # no tool: revision not compared
    other = FileDigest(120, "cd" * 32, True)
    problems = sidecar_problems(_recorded(), other, 42)
    assert any("size 120" in p for p in problems) and any("sha256 cdcd" in p for p in problems)
    assert "revision 50" in sidecar_problems(_recorded(), same, 50)[0]
    # a revision from the status header is a lower bound: the file may be newer, never older
    assert sidecar_problems(_recorded(revision_source="status-header"), same, 50) == []
    assert "lower bound" in sidecar_problems(_recorded(revision_source="status-header"), same, 40)[0]


def test_both_sidecar_formats_are_read_and_others_refused():
    store = _recorded()
    assert (store.cluster_id, store.member, store.revision, store.revision_exact) == ("2", "m1", 42, True)
    staged = Recorded.from_sidecar({"sha256": "ab" * 32, "size": 100, "upload": "up"}, "up.db.json")
    assert staged.revision is None and staged.cluster_id == ""
    assert sidecar_problems(staged, FileDigest(100, "ab" * 32, True), 7) == []
    for bad in ([1, 2], {"sha256": "ab"}, {"sha256": "x" * 64, "size": "big"}, {"size": 1}):
        with pytest.raises(ValueError, match=r"up\.db\.json"):
            Recorded.from_sidecar(bad, "up.db.json")
