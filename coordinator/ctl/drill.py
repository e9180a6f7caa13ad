"""etcdguardctl drill: restore vault snapshots into a scratch etcd on the coordinator host, prove, remove.

The daemon runs it (coordinator/drill/), as it runs its schedule, so a
dropped terminal does not leave a scratch etcd behind. Exit 0 when every
drilled snapshot was proven, 1 when one failed (its reason and what was
checked are printed), 2 for a bad id, 3 while a cluster restore runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from etcdguard.common.base.durations import format_duration, stamp_times
from etcdguard.common.base.errors import EXIT_FAILED, EXIT_OK, UsageError
from etcdguard.coordinator.ctl.cli import _json_flag, ask, command, emit
from etcdguard.coordinator.pitr.times import parse_moment

_MARK = {True: "ok  ", False: "FAIL", None: "--  "}


def _drill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT",
                   help="vault id (a sha256 prefix) or 'latest'; default: what the schedule drills (the newest "
                        "scheduled or manual snapshot, and the newest point-in-time one)")
    p.add_argument("--to-revision", type=int, metavar="N",
                   help="drill a point in time: the snapshot of revision N built from a full snapshot and the "
                        "captured changes (stored in the vault, pinned, as a point-in-time restore stores it)")
    p.add_argument("--to-time", metavar="T",
                   help="drill the point at T (RFC 3339 with a zone, or a duration ago: 5m, '5m ago')")
    _json_flag(p)


def drill_request(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The daemon's request for these arguments; UsageError for a combination that does not go."""
    given = [name for name, value in (("SNAPSHOT", args.snapshot), ("--to-revision", args.to_revision),
                                      ("--to-time", args.to_time)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"drill: give one of SNAPSHOT, --to-revision and --to-time, not {' and '.join(given)}")
    if args.to_revision is not None:
        if args.to_revision < 1:
            raise UsageError("--to-revision: a revision is a whole number >= 1")
        return {"to_revision": args.to_revision}
    if args.to_time is not None:
        return {"to_time": parse_moment(args.to_time, now)}
    return {"id": args.snapshot} if args.snapshot else {}


def _progress(p: dict[str, Any]) -> None:
    if p.get("heartbeat") or "ok" in p:
        return
    if p.get("message"):
        sys.stderr.write(f"{p['message']}\n")
        sys.stderr.flush()


def render(result: dict[str, Any]) -> list[str]:
    """One drill's lines: the verdict, every check, and what was proven removed."""
    head = (f"drill of {result['sha256'][:12]} ({result.get('kind') or '-'}, revision {result['revision']}): "
            f"{'PASSED' if result['ok'] else 'FAILED (' + str(result.get('reason')) + ')'} in "
            f"{format_duration(float(result['seconds']))}")
    lines = [head, f"  {result['message']}"]
    width = max((len(c["name"]) for c in result.get("checks") or []), default=0)
    for c in result.get("checks") or []:
        lines.append(f"  {_MARK.get(c['ok'], '?   ')}  {c['name']:<{width}}  {c['detail']}")
    if result.get("cleanup"):
        lines.append(f"  {result['cleanup']}")
    if not result["ok"]:
        lines.append("  what to do: docs/backup.md, 'When a drill fails'")
    return lines


@command("drill", "restore vault snapshots into a scratch etcd on this host, prove them, remove it", _drill_args)
def cmd_drill(args: argparse.Namespace) -> int:
    reply = ask(args, "drill", drill_request(args, time.time()), on_progress=_progress)
    text = "\n".join(line for r in reply["drills"] for line in render(stamp_times(r)))
    emit(args, reply, text)
    return EXIT_OK if reply.get("ok") else EXIT_FAILED
