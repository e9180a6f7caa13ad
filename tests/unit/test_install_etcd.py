"""scripts/install-etcd.sh honours an ETCDGUARD_ETCD35_BIN that already holds etcd 3.5 (no download), and
refuses one that does not (rather than writing into it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-etcd.sh"


def _run(bin35: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDGUARD_ETCD35_BIN": str(bin35)}
    env.pop("ETCD35_PREFIX", None)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd 3.4 is not on PATH (scripts/install-etcd.sh)")
def test_a_given_etcd35_dir_is_used_without_a_download(tmp_path):
    bin35 = tmp_path / "etcd35"
    bin35.mkdir()
    for tool in ("etcd", "etcdctl", "etcdutl"):
        (bin35 / tool).write_text("#!/bin/sh\necho 'etcd Version: 3.5.16'\n")
        (bin35 / tool).chmod(0o755)
    r = _run(bin35)
    assert r.returncode == 0, r.stderr
    assert "downloading" not in r.stdout + r.stderr
    assert f"etcd 3.5: etcd Version: 3.5.16 ({bin35})" in r.stdout


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd 3.4 is not on PATH (scripts/install-etcd.sh)")
def test_a_given_dir_without_etcd35_is_refused(tmp_path):
    r = _run(tmp_path / "empty")
    assert r.returncode == 2
    assert f"ETCDGUARD_ETCD35_BIN={tmp_path / 'empty'} holds no etcd and etcdutl" in r.stderr
    assert not (tmp_path / "empty").exists()
