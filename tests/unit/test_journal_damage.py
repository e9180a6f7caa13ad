"""Damaged operation journals: the shared library's reading of torn and garbage records, and what each
reader of the agent's operations makes of a journal that cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etcdguard.agent.restore.records import (
    KIND_LOCAL,
    OperationStore,
    restore_active,
    snapshot_in_use,
)
from etcdguard.common.journal import JournalDamaged, JournalFile, parse_lines
from etcdguard.common.ops.flows import NODE_RESTORE
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.states import OpState

PARAMS = RestoreParams(op="r-good", snapshot="/s.db", snapshot_sha256="a" * 64, snapshot_size=100,
                       snapshot_revision=5, name="m1", peer_url="http://127.0.0.1:2380",
                       initial_cluster="m1=http://127.0.0.1:2380", token="t", data_dir="/var/lib/etcd",
                       bump_revision=0, restore_argv=("/usr/bin/etcdutl", "snapshot", "restore", "/s.db"))


def test_parse_lines_tells_a_torn_tail_from_damage() -> None:
    read = parse_lines(b'{"event": "a"}\n{"event": "b"}\n{"event": "to', "j")
    assert [r["event"] for r in read.records] == ["a", "b"] and read.torn == len(b'{"event": "to')
    assert read.damage is None
    read = parse_lines(b'{"event": "a"}\nnot json\n{"event": "c"}\n', "j")
    assert [r["event"] for r in read.records] == ["a", "c"]
    assert read.damage is not None and "record 2 is not JSON" in read.damage
    for bad, why in ((b"[1]\n", "list, not a JSON object"), (b'{"t": 1}\n', "no 'event'"),
                     (b"\xff\n", "not JSON")):
        assert why in (parse_lines(bad, "j").damage or "")


def test_an_append_cuts_a_torn_last_record_first_and_keeps_every_whole_one(tmp_path: Path) -> None:
    j = JournalFile(tmp_path / "op" / "journal.jsonl")
    j.append("first")
    with open(j.path, "ab") as fh:
        fh.write(b'{"event": "second", "half')      # the process died in the middle of this append
    assert [r["event"] for r in j.read().records] == ["first"]
    j.append("third")
    lines = j.path.read_bytes().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["first", "third"]
    assert j.read().damage is None and j.read().torn == 0


@pytest.mark.parametrize("content", [b'{"event": "created", "op": "zz", "params"', b"[1,2]\n", b"\xff\xfe\n",
                                     b"[" * 100_000 + b"\n", b'{"event": "state", "state": "done"}\n'])
def test_every_reader_survives_a_damaged_journal(tmp_path: Path, content: bytes) -> None:
    store = OperationStore(tmp_path)
    good = store.get("r-good").create(kind=KIND_LOCAL, flow=NODE_RESTORE, params=PARAMS)
    good.set_state(OpState.DONE)
    bad = store.get("zz")
    bad.dir.mkdir(parents=True)
    (bad.dir / "journal.jsonl").write_bytes(content)
    assert [o.op for o in store.all()] == ["zz", "r-good"]   # damaged first: never the "last" operation
    summary = bad.summary()
    assert summary.state is OpState.DAMAGED and "zz" in (summary.error or "")
    assert store.damaged() == [("zz", summary.error)]
    with pytest.raises(JournalDamaged):
        bad.log()
    assert (bad.dir / "journal.jsonl").read_bytes() == content   # never rewritten with a guess
    assert restore_active(tmp_path)
    assert snapshot_in_use(tmp_path, tmp_path / "any.db")


def test_a_garbage_record_in_the_middle_is_damage_even_when_the_rest_reads(tmp_path: Path) -> None:
    store = OperationStore(tmp_path)
    log = store.get("r1").create(kind=KIND_LOCAL, flow=NODE_RESTORE, params=PARAMS)
    log.emit("step", step="preflight", status="started")
    with open(log.path, "ab") as fh:
        fh.write(b"garbage\n")
    log2 = JournalFile(log.path)
    log2.append("step", step="preflight", status="done", result={})
    assert store.get("r1").summary().state is OpState.DAMAGED
    assert "record 3 is not JSON" in (store.get("r1").summary().error or "")


def test_an_old_op_json_record_is_converted_once_and_kept(tmp_path: Path) -> None:
    store = OperationStore(tmp_path)
    d = store.root / "r-old"
    (d / "steps").mkdir(parents=True)
    (d / "op.json").write_text(json.dumps({"kind": "local", "created_at": 1.0, "state": "done",
                                           "params": PARAMS.to_json()}))
    (d / "steps" / "prepare.json").write_text(json.dumps({"step": "prepare", "result": {"bytes": 7},
                                                          "finished_at": 2.0}))
    (d / "journal.jsonl").write_text('{"t": 1, "event": "created"}\n')
    rec = store.get("r-old").log().record
    assert rec.state is OpState.DONE and rec.step_done("prepare").result == {"bytes": 7}
    assert rec.created_at == 1.0
    assert (d / "op-v1.json").exists() and (d / "journal-v1.jsonl").exists() and not (d / "op.json").exists()
    assert store.get("r-old").log().record.state is OpState.DONE     # read again: the journal alone
