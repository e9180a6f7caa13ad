"""The agent's local store: pins (kept by retention, shown in listings, set by `etcdguard-agent pin`) and
the files beside a snapshot (bundle, pin) that go with it."""

from __future__ import annotations

import hashlib
import json

from etcdguard.agent.cli import main
from etcdguard.agent.snapshots.store import SnapshotStore, snapshot_name
from etcdguard.common.snapshot.sidecar import SnapshotMeta

T0 = 1_790_000_000.0


def put(store: SnapshotStore, created: float, revision: int) -> SnapshotMeta:
    body = f"snapshot {revision}".encode() * 100
    data = body + hashlib.sha256(body).digest()
    temp = store.temp_path()
    temp.write_bytes(data)
    meta = SnapshotMeta(name=snapshot_name(created, revision), path="", size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), revision=revision,
                        created_at="", created_unix=created, member="m1", member_id="a", cluster_id="c",
                        etcd_version="3.5.16", duration_seconds=0.1, revision_source="snapshot-status")
    return store.commit(temp, meta)


def test_a_pinned_snapshot_is_kept_and_listed(tmp_path):
    store = SnapshotStore(tmp_path / "store")
    store.prepare()
    metas = [put(store, T0 + i, 10 + i) for i in range(4)]
    pinned = store.pin(metas[0].name, "before upgrade")
    assert pinned.pinned == "before upgrade"
    store.bundle_path(metas[1].name, True).write_bytes(b"age")
    verdicts = {v.name: v.reason for v in store.apply_retention(keep=1, max_age=None, now=T0 + 10)}
    assert verdicts[metas[0].name] == "keep: pinned (before upgrade)"
    assert [(m.name, m.pinned) for m in store.list()] == [(metas[3].name, None), (metas[0].name, "before upgrade")]
    assert not store.bundle_path(metas[1].name, True).exists()   # went with its snapshot
    assert store.unpin(metas[0].name).pinned is None
    store.apply_retention(keep=1, max_age=None, now=T0 + 10)
    assert [m.name for m in store.list()] == [metas[3].name]


def test_agent_pin_and_unpin_commands(tmp_path, capsys):
    store = SnapshotStore(tmp_path / "store")
    store.prepare()
    meta = put(store, T0, 7)
    config = tmp_path / "agent.toml"
    config.write_text(f'[backup]\ndir = "{store.dir}"\n')
    assert main(["pin", meta.name, "--reason", "audit 2026", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pinned"] == "audit 2026" and out["name"] == meta.name
    assert main(["snapshots", "--config", str(config)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "TAKEN", "AGE", "SIZE", "REVISION", "SHA256", "BUNDLE", "PINNED"]
    assert row.startswith(meta.name) and row.endswith("audit 2026")   # the pin's reason, in PINNED
    assert main(["unpin", meta.name, "--config", str(config)]) == 0
    assert store.list()[0].pinned is None
    assert main(["pin", "snap-nope.db", "--config", str(config)]) == 1
    assert "no snapshot named 'snap-nope.db'" in capsys.readouterr().err
