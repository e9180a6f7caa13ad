"""Damaged operation records (issue 9 item 6): the pure checks, and what each reader makes of a damaged file."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcdguard.agent.restore.journal import (
    DAMAGED,
    DamagedRecord,
    OperationStore,
    record_problem,
    step_problem,
)
from etcdguard.agent.restore.remote import restore_active, snapshot_in_use


@pytest.mark.parametrize(("data", "problem"), [
    ([1, 2], "holds list, not a JSON object"),
    ("running", "holds str"),
    ({}, "no 'state'"),
    ({"state": 1}, "no 'state'"),
    ({"state": "running", "params": [1]}, "'params' is not an object"),
    ({"state": "running", "created_at": "yesterday"}, "'created_at' is not a number"),
    ({"state": "running", "created_at": True}, "'created_at' is not a number"),
])
def test_record_problems(data: object, problem: str) -> None:
    assert problem in (record_problem(data) or "")


def test_a_sound_record_has_no_problem() -> None:
    assert record_problem({"state": "done", "created_at": 1.5, "params": {}}) is None
    assert step_problem({"result": {}, "finished_at": 2}) is None
    assert "no 'result'" in (step_problem({"finished_at": 2}) or "")
    assert "no 'finished_at'" in (step_problem({"result": {}}) or "")


@pytest.mark.parametrize("content", [b'{"state": "runn', b"[1,2]", b"\xff\xfe", b"[" * 100_000, b""])
def test_every_reader_survives_a_damaged_record(tmp_path: Path, content: bytes) -> None:
    store = OperationStore(tmp_path)
    good = store.get("r-good")
    good.create({"state": "done", "created_at": 5.0, "params": {}})
    bad = store.get("zz")
    bad.dir.mkdir(parents=True)
    (bad.dir / "op.json").write_bytes(content)
    assert [o.op for o in store.all()] == ["zz", "r-good"]   # damaged first: never the "last" operation
    record = bad.record()
    assert record["state"] == DAMAGED and "zz" in record["error"]
    assert store.damaged() == [("zz", record["error"])]
    with pytest.raises(DamagedRecord, match="the record of operation zz"):
        bad.load()
    with pytest.raises(DamagedRecord):
        bad.update(state="done")
    assert (bad.dir / "op.json").read_bytes() == content   # never overwritten with a guess
    assert restore_active(tmp_path)
    assert snapshot_in_use(tmp_path, tmp_path / "any.db")


def test_a_damaged_step_record_is_a_typed_error(tmp_path: Path) -> None:
    op = OperationStore(tmp_path).get("r1")
    op.create({"state": "running", "created_at": 1.0, "params": {}})
    (op.steps_dir / "prepare.json").write_text('{"result": [], "finished_at": 1}')
    with pytest.raises(DamagedRecord, match="prepare step record of operation r1"):
        op.finished("prepare")
    (op.dir / "journal.jsonl").write_bytes(b'{"event": "ok"}\n[1]\n\xff\n{"torn')
    assert op.journal_lines() == [{"event": "ok"}]
