"""etcdguard-agent pin NAME / unpin NAME: keep annotations on the local store (Barman's ``keep``).

A pinned snapshot is never removed by the store's retention; ``snapshots``
shows the pin and its reason. Works on the store directly (the daemon reads
pins at every retention run), so it needs no running agent.
"""

from __future__ import annotations

import argparse

from etcdguard.agent.cli import _json_flag, command, emit, load_config
from etcdguard.common.base.errors import EXIT_OK, UsageError

REASON_MAX = 64


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the snapshot's file name in the store (see `snapshots`)")
    _json_flag(p)


def _pin_args(p: argparse.ArgumentParser) -> None:
    _args(p)
    p.add_argument("--reason", default="pinned by an operator", metavar="TEXT",
                   help=f"why it is kept, shown in listings (at most {REASON_MAX} characters)")


@command("pin", "keep a snapshot of the local store whatever retention says", _pin_args)
def cmd_pin(args: argparse.Namespace) -> int:
    from etcdguard.agent.snapshots.store import SnapshotStore

    reason = " ".join(str(args.reason).split())
    if not reason or len(reason) > REASON_MAX or not reason.isprintable():
        raise UsageError(f"--reason: 1 to {REASON_MAX} printable characters")
    config = load_config(args)
    assert config is not None
    meta = SnapshotStore(config.backup.dir).pin(args.name, reason)
    emit(args, meta.to_json(), f"pinned {meta.name}: {reason}")
    return EXIT_OK


@command("unpin", "let retention remove a pinned snapshot of the local store again", _args)
def cmd_unpin(args: argparse.Namespace) -> int:
    from etcdguard.agent.snapshots.store import SnapshotStore

    config = load_config(args)
    assert config is not None
    meta = SnapshotStore(config.backup.dir).unpin(args.name)
    emit(args, meta.to_json(), f"unpinned {meta.name}: retention ([backup] keep, max_age) applies to it again")
    return EXIT_OK
