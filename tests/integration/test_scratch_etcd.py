"""A scratch single-member etcd restored from a real snapshot: it serves the snapshot's data on loopback,
apart from the live member, and leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from etcdguard.common.etcd.scratch import EtcdBinaries, ScratchEtcd, serving
from etcdguard.common.snapshot.tools import probe_tool

from tests.helpers.etcd import EtcdMember


@pytest.mark.parametrize("etcd_build", ["3.4", "3.5"], indirect=True)
def test_a_scratch_member_serves_the_snapshot_and_leaves_nothing(etcd_member: EtcdMember, tmp_path: Path) -> None:
    etcd_member.put("/registry/a", "1")
    etcd_member.put("/registry/b", "2")
    snap = tmp_path / "snap.db"
    etcd_member.etcdctl("snapshot", "save", str(snap), timeout=120)
    etcd_member.put("/registry/later", "not in the snapshot")
    revision = int(etcd_member.status()["header"]["revision"])
    binaries = EtcdBinaries(etcd_member.build.etcd, probe_tool(etcd_member.build.restore_tool))
    with serving(binaries, snap, tmp_path, bump_revision=100 if binaries.tool.supports_bump else 0) as (s, client):
        assert client.get("/registry/a") == b"1" and client.get("/registry/later") is None
        st = client.status()
        assert st.revision >= revision - 1 and st.cluster_id != int(etcd_member.status()["header"]["cluster_id"])
        scratch_dir, pid = s.dir, s.proc.pid if s.proc else 0
        assert s.endpoint.startswith("http://127.0.0.1:")
    assert not scratch_dir.exists()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True, check=False).returncode != 0
    assert etcd_member.get("/registry/later") == "not in the snapshot"     # the live member untouched


def test_a_snapshot_that_does_not_restore_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    import shutil

    tool_path = shutil.which("etcdctl")
    etcd = shutil.which("etcd")
    if tool_path is None or etcd is None:
        pytest.skip("etcd 3.4 not on PATH")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a snapshot" * 100)
    scratch = ScratchEtcd(EtcdBinaries(Path(etcd), probe_tool(Path(tool_path))), tmp_path)
    with pytest.raises(Exception, match="snapshot restore into the scratch dir failed"):
        scratch.start(bad)
    scratch.close()
    assert not scratch.dir.exists()
