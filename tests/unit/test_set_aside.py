"""A replaced member's data set aside and put back, by rename only: idempotent, never deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcdguard.agent.restore import swap
from etcdguard.common.base.errors import UnsafeRefusal


def member(data_dir: Path, marker: str) -> Path:
    (data_dir / "member" / "snap").mkdir(parents=True)
    (data_dir / "member" / "snap" / "db").write_text(marker)
    return data_dir / "member"


def test_set_aside_renames_the_data_and_put_back_brings_it_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    member(data, "old")
    out = swap.set_aside(data, "op1")
    assert out["kept"] == str(data / "member.etcdguard-op1") and not (data / "member").exists()
    assert swap.set_aside(data, "op1")["kept"] == out["kept"]          # again: nothing more happens
    member(data, "new")                                                  # etcd made new data meanwhile
    notes = swap.put_back(data, "op1")
    assert (data / "member" / "snap" / "db").read_text() == "old"
    assert (data / ".etcdguard-op1" / "discarded-member" / "snap" / "db").read_text() == "new"
    assert any("back" in n for n in notes)
    assert "nothing was set aside" in swap.put_back(data, "op1")[0]


def test_a_member_whose_data_is_gone_has_nothing_to_set_aside(tmp_path: Path) -> None:
    assert swap.set_aside(tmp_path / "gone", "op1") == {"kept": None}
    data = tmp_path / "empty"
    data.mkdir()
    assert swap.set_aside(data, "op1") == {"kept": None}


def test_data_that_reappears_after_it_was_set_aside_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    member(data, "old")
    swap.set_aside(data, "op1")
    member(data, "again")
    with pytest.raises(UnsafeRefusal, match="reappeared"):
        swap.set_aside(data, "op1")


def test_a_separate_wal_dir_is_set_aside_and_put_back(tmp_path: Path) -> None:
    data, wal = tmp_path / "data", tmp_path / "wal"
    member(data, "old")
    wal.mkdir()
    (wal / "0000.wal").write_text("w")
    out = swap.set_aside(data, "op1", wal)
    assert out["wal_kept"] and not (wal / "0000.wal").exists()
    assert swap.set_aside(data, "op1", wal)["wal_kept"] == out["wal_kept"]
    swap.put_back(data, "op1", wal)
    assert (wal / "0000.wal").read_text() == "w"
