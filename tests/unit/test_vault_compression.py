"""A vault that stores zstd-compressed objects: what it writes, and that everything it holds (compressed or
stored before compression) reads back as the snapshot, verified by the snapshot's own sha256."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import pytest
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import SnapshotCorrupt
from etcdguard.common.snapshot import compression
from etcdguard.coordinator.vault.store import Incoming, Vault

from tests.helpers.s3 import age_keypair

T0 = 1_790_000_000.0


def snapshot_bytes(seed: str, size: int = 3_000_000) -> bytes:
    """Compressible like an etcd database (repeated keys and page layout) with random values in it."""
    rng = hashlib.sha256(seed.encode()).digest()
    body = bytearray()
    while len(body) < size - 32:
        body += b"/registry/configmaps/ns-%03d/cm-" % (len(body) % 40) + rng + os.urandom(8) + b"\0" * 64
    body = bytes(body[: size - 32])
    return body + hashlib.sha256(body).digest()


def incoming_for(data: bytes, revision: int = 7, created: float = T0) -> Incoming:
    return Incoming(sha256=hashlib.sha256(data).hexdigest(), size=len(data), source_member="m2",
                    original_name=f"snap-r{revision}.db", revision=revision, cluster_id="cafe", member_id="beef",
                    etcd_version="3.5.16", created_at="2026-09-21T10:13:20Z", created_unix=created,
                    hashkv=12345, hashkv_compact_revision=1, key_count=99)


def plain_writer(data: bytes):
    def fetch(dest: Path) -> None:
        with fsutil.atomic_writer(dest) as fh:
            fh.write(data)
    return fetch


def frames_writer(data: bytes, chunk: int = 1 << 20):
    """What a compressed transfer writes: one frame per chunk the agent sent."""
    def fetch(dest: Path) -> Optional[str]:
        with fsutil.atomic_writer(dest) as fh:
            for i in range(0, len(data), chunk):
                fh.write(compression.compress_frame(data[i:i + chunk], 1))
        return compression.ZSTD
    return fetch


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    v = Vault(tmp_path / "vault", compression=compression.ZSTD)
    v.prepare()
    return v


def test_a_plain_transfer_is_compressed_into_the_vault_and_reads_back_as_the_snapshot(vault, tmp_path):
    data = snapshot_bytes("a")
    sha = hashlib.sha256(data).hexdigest()
    entry, pulled = vault.pull(incoming_for(data), plain_writer(data), verify=True)
    assert pulled and entry.compression == "zstd"
    stored = vault.dir / f"{sha}.db.zst"
    assert entry.path == str(stored) and entry.stored_size == stored.stat().st_size < len(data) // 2
    assert sorted(p.name for p in vault.dir.iterdir()) == [f"{sha}.db.zst", f"{sha}.json"]
    assert compression.decompressing(io.BytesIO(stored.read_bytes())).read() == data
    sidecar = json.loads((vault.dir / f"{sha}.json").read_text())
    assert (sidecar["size"], sidecar["hashkv"], sidecar["key_count"]) == (len(data), 12345, 99)
    assert vault.list() == [entry] and Vault(vault.dir).list() == [entry]
    with vault.materialize(entry) as path:
        assert path.read_bytes() == data and path.parent == vault.work_dir
    assert not path.exists()                                     # the decompressed copy is gone again
    out = tmp_path / "export.db"
    assert vault.export(entry, out) == len(data) and out.read_bytes() == data
    raw = tmp_path / "raw.zst"
    vault.export(entry, raw, raw=True)
    assert raw.read_bytes() == stored.read_bytes()
    # a restore's check of the copy reads the decompressed snapshot: these test bytes pass its sha256 and trailer
    # checks and then fail the bbolt check (a real snapshot passes it: tests/integration)
    assert "not a bbolt database" in str(vault.verify_copy(entry))


def test_a_compressed_transfer_is_stored_as_it_came(vault):
    data = snapshot_bytes("b")
    entry, _ = vault.pull(incoming_for(data), frames_writer(data), verify=True)
    assert Path(entry.path).name.endswith(".db.zst")
    with vault.materialize(entry) as path:
        assert path.read_bytes() == data


def test_frames_of_other_data_are_refused_and_nothing_is_stored(vault):
    data, other = snapshot_bytes("c"), snapshot_bytes("d")
    with pytest.raises(SnapshotCorrupt, match=r"decompresses to .* expected"):
        vault.pull(incoming_for(data), frames_writer(other), verify=True)
    assert list(vault.dir.iterdir()) == [] and vault.list() == []


def test_snapshots_stored_before_compression_stay_readable(tmp_path):
    old_data, new_data = snapshot_bytes("old"), snapshot_bytes("new")
    before = Vault(tmp_path / "vault")                            # a vault from before compression
    before.prepare()
    old, _ = before.pull(incoming_for(old_data, 5), plain_writer(old_data))
    assert old.compression == "" and Path(old.path).name.endswith(".db")
    now = Vault(tmp_path / "vault", compression=compression.ZSTD)
    now.prepare()
    new, _ = now.pull(incoming_for(new_data, 6, T0 + 60), plain_writer(new_data))
    listed = {e.sha256: e for e in now.list()}
    assert listed[old.sha256].compression == "" and listed[old.sha256].stored_size == len(old_data)
    assert listed[new.sha256].compression == "zstd"
    for entry, data in ((listed[old.sha256], old_data), (listed[new.sha256], new_data)):
        with now.materialize(entry) as path:
            assert path.read_bytes() == data
        out = tmp_path / f"{entry.sha256}.out"
        now.export(entry, out)
        assert out.read_bytes() == data
    assert now.resolve("latest").sha256 == new.sha256


def test_an_altered_compressed_object_is_refused_when_read(vault):
    data = snapshot_bytes("e")
    entry, _ = vault.pull(incoming_for(data), plain_writer(data))
    stored = bytearray(Path(entry.path).read_bytes())
    stored[len(stored) // 2] ^= 0x01
    Path(entry.path).write_bytes(bytes(stored))
    with pytest.raises(SnapshotCorrupt), vault.materialize(entry):
        pass
    assert list(vault.work_dir.glob(f"{fsutil.TEMP_PREFIX}*")) == []


def test_add_file_compresses_a_local_snapshot(vault, tmp_path):
    data = snapshot_bytes("f")
    src = tmp_path / "pre-restore.db"
    src.write_bytes(data)
    entry, pulled = vault.add_file(src, incoming_for(data), pin="pre-restore op1")
    assert pulled and entry.compression == "zstd" and entry.pinned == "pre-restore op1"
    with vault.materialize(entry) as path:
        assert path.read_bytes() == data


def test_age_wraps_the_compressed_bytes(tmp_path):
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        pytest.skip("the age tool is not installed (apt install age)")
    identity, recipient = age_keypair(tmp_path / "keys")
    vault = Vault(tmp_path / "vault", encrypt_to=[recipient], identity=identity, work_dir=tmp_path / "work",
                  compression=compression.ZSTD)
    vault.prepare()
    data = snapshot_bytes("g")
    entry, _ = vault.pull(incoming_for(data), frames_writer(data))
    stored = Path(entry.path)
    assert stored.name.endswith(".db.zst.age") and entry.encrypted and entry.compression == "zstd"
    assert stored.read_bytes().startswith(b"age-encryption.org/v1") and entry.stored_size < len(data) // 2
    out = tmp_path / "out.db"
    vault.export(entry, out)
    assert out.read_bytes() == data
    assert list((tmp_path / "work").iterdir()) == []
