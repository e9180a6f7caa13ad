"""etcdguardctl diagnose: one verdict on the cluster, its evidence and the command that fixes it.

The daemon gathers every agent's fresh report and the vault's state and
judges them (coordinator/diagnose/); this prints the verdict and exits with
its class: 0 healthy, 10-19 one class each (docs/operations.md), 1 when the
diagnosis itself failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from etcdguard.coordinator.ctl.cli import _json_flag, ask, command, emit


def render(d: dict[str, Any]) -> str:
    lines = [f"{d['verdict'].upper()}: {d['summary']}"]
    if d.get("command"):
        lines.append(f"  fix: {d['command']}")
    problems = d.get("problems") or []
    if problems:
        lines.append("  evidence:")
        lines += [f"    - {e}" for e in problems[0].get("evidence") or []]
    for p in problems[1:]:
        lines.append(f"  also {p['kind'].upper()} (class {p['exit']}): {p['summary']}")
        lines += [f"    - {e}" for e in p.get("evidence") or []]
        lines.append(f"    fix: {p['command']}")
    lines.append("  seen now:")
    lines += [f"    {e}" for e in d.get("evidence") or []]
    return "\n".join(lines)


@command("diagnose", "one verdict on the cluster from every agent's fresh report and etcd's own view, with the "
                     "evidence and the command that fixes it; exit 0 only when healthy", _json_flag)
def cmd_diagnose(args: argparse.Namespace) -> int:
    result = ask(args, "diagnose")
    emit(args, result, render(result))
    return int(result["exit"])
