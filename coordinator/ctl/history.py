"""etcdguardctl history PREFIX: the captured changes under a key prefix, to find the moment to restore to.

Each change: its revision, when the capture saw it, put or delete, the
value's size, the key. Then the window, and the command that goes back to
just before the newest delete shown.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.base.errors import EXIT_OK, UsageError
from etcdguard.coordinator.ctl.cli import _json_flag, _table, ask, command, emit
from etcdguard.coordinator.pitr.plan import window_sentence
from etcdguard.coordinator.pitr.times import parse_moment


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="PREFIX", help="key prefix, e.g. /registry/namespaces/prod ('/' for every key)")
    p.add_argument("--since", metavar="T", help="changes from T on (RFC 3339 with a zone, or a duration ago: 1h)")
    p.add_argument("--until", metavar="T", help="changes up to T (RFC 3339 with a zone, or a duration ago)")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="at most the N newest changes (1000)")
    _json_flag(p)


@command("history", "captured changes under a key prefix (revision, time, put/delete, value size)",
         _history_args)
def cmd_history(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit: at least 1")
    now = time.time()
    request: dict[str, Any] = {"prefix": args.prefix, "limit": args.limit}
    if args.since:
        request["since"] = parse_moment(args.since, now)
    if args.until:
        request["until"] = parse_moment(args.until, now)
    reply = ask(args, "history", request)
    emit(args, reply, render_history(reply))
    return EXIT_OK


def render_history(r: dict[str, Any]) -> str:
    changes = r["changes"]
    lines = []
    if not changes:
        lines.append(f"no captured change under {r['prefix']!r}" + (" in that time" if r.get("since") or r.get("until")
                                                                    else ""))
    else:
        several = len({c["cluster_id"] for c in changes}) > 1
        rows = [["REVISION", "TIME", "CHANGE", "SIZE", "KEY"] + (["CLUSTER"] if several else [])]
        for c in changes:
            rows.append([str(c["revision"]), c["at"], c["kind"], "-" if c["kind"] == "delete"
                         else format_bytes(c["value_size"]), c["key"]] + ([c["cluster_id"]] if several else []))
        lines.append(_table(rows))
        if r.get("truncated"):
            lines.append(f"(only the newest {len(changes)} changes; narrow with --since/--until or raise --limit)")
    lines.append(f"window: {window_sentence(r.get('window') or [], r.get('gaps') or [])}")
    deletes = [c for c in changes if c["kind"] == "delete"]
    if deletes:
        d = deletes[-1]
        lines.append(f"to undo the newest delete shown ({d['key']} at revision {d['revision']}): "
                     f"etcdguardctl restore --to-revision {d['revision'] - 1} --plan")
    return "\n".join(lines)
