"""The node-local restore plan: pure data, printed by `--plan`, executed by engine.py.

The steps and their words are the step registry's (common/ops/flows.py,
NODE_RESTORE); the directory scheme (where the prepared data, the set-aside
data and the WAL go) is agent/restore/swap.py's.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etcdguard.agent.restore.swap import restore_target, wal_target
from etcdguard.common.ops.flows import NODE_RESTORE
from etcdguard.common.ops.params import RestoreParams

STEPS = NODE_RESTORE.names
DESTRUCTIVE = frozenset(s.name for s in NODE_RESTORE.steps if s.destructive)


def argv_problems(p: RestoreParams) -> list[str]:
    """Why the recorded restore command cannot be trusted to restore the recorded file (pure).

    The tool, the snapshot and the target must be absolute, and the command must
    name exactly the snapshot whose sha256 was recorded: a relative path would
    be read from whatever directory a resume runs in.
    """
    argv = list(p.restore_argv)
    problems = []
    if len(argv) < 6 or argv[1:3] != ["snapshot", "restore"]:
        return [f"the recorded restore command is not `snapshot restore`: {shlex.join(argv)[:200]}"]
    if not Path(argv[0]).is_absolute():
        problems.append(f"the restore tool {argv[0]!r} is a relative path")
    if argv[3] != p.snapshot or not Path(argv[3]).is_absolute():
        problems.append(f"the restore command reads {argv[3]!r}, not the verified {p.snapshot}")
    target = str(restore_target(Path(p.data_dir), p.op))
    if argv[4] != "--data-dir" or argv[5] != target or not Path(target).is_absolute():
        problems.append(f"the restore command writes to {argv[5]!r}, not {target}")
    if p.wal_dir:
        wal = str(wal_target(Path(p.wal_dir), p.op))
        if "--wal-dir" not in argv or argv[argv.index("--wal-dir") + 1:][:1] != [wal]:
            problems.append(f"the restore command does not write the WAL to {wal}")
    return problems


@dataclass(frozen=True)
class PlannedStep:
    step: str
    destructive: bool
    what: str


def build_plan(p: RestoreParams, etcd_runtime: str, apiserver_runtime: Optional[str]) -> list[PlannedStep]:
    return [PlannedStep(s.name, s.destructive, s.describe_node(p, etcd_runtime, apiserver_runtime))
            for s in NODE_RESTORE.steps]


def render_plan(p: RestoreParams, steps: list[PlannedStep], runtimes: tuple[str, ...] = (),
                checks: Sequence[str] = (), refusals: Sequence[str] = ()) -> str:
    lines = [f"restore plan {p.op} for member {p.name} (data dir {p.data_dir})",
             f"  initial cluster {p.initial_cluster}, token {p.token}"]
    lines += [f"  {r}" for r in runtimes]
    lines += [f"  checked: {c}" for c in checks]
    for i, s in enumerate(steps, 1):
        mark = "!" if s.destructive else " "
        lines.append(f" {mark}{i}. {s.step:<9} {s.what}")
    lines.append("  (! = downtime / changes the running node; nothing has been changed)")
    if refusals:
        lines.append("REFUSED: this restore will not run (exit 3):")
        lines += [f"  - {r}" for r in refusals]
    return "\n".join(lines)

