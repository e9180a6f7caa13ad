"""The node-local restore plan: pure data, printed by `--plan`, executed by steps.py.

The directory scheme (where the prepared data, the set-aside data and the
WAL go) is agent/restore/swap.py's; the step names are agent/restore/phases.py's.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.restore.swap import aside_member, prepared_member, restore_target, wal_target
from etcdguard.common.ops.phases import DESTRUCTIVE as _DESTRUCTIVE
from etcdguard.common.ops.phases import NODE_STEPS

STEPS = NODE_STEPS
DESTRUCTIVE = frozenset(s for s in _DESTRUCTIVE if s in NODE_STEPS)


@dataclass(frozen=True)
class RestoreParams:
    op: str
    snapshot: str
    snapshot_sha256: str
    snapshot_size: int
    snapshot_revision: int
    name: str
    peer_url: str
    initial_cluster: str
    token: str
    data_dir: str
    bump_revision: int          # 0 when the tool cannot bump
    restore_argv: tuple[str, ...]
    live_cluster_id: str = ""   # the cluster this node served when the operation was planned (hex; "" unknown)
    wal_dir: str = ""           # the member's separate --wal-dir ("" : the WAL is inside the data dir)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["restore_argv"] = list(self.restore_argv)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RestoreParams:
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "restore_argv": tuple(data["restore_argv"])})

    @property
    def expected_min_revision(self) -> int:
        return self.snapshot_revision + self.bump_revision


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
    data = Path(p.data_dir)
    live = data / "member"
    prepared = prepared_member(data, p.op)
    aside = aside_member(data, p.op)
    bump = (f"revision bumped by {p.bump_revision:,} (restored revision >= {p.expected_min_revision:,})"
            if p.bump_revision else "no revision bump (the restore tool does not support --bump-revision)")
    steps = [
        PlannedStep("preflight", False,
                    f"verify {p.snapshot} (sha256 {p.snapshot_sha256[:16]}..., {p.snapshot_size} bytes, "
                    f"revision {p.snapshot_revision} read from the file); restore tool present; "
                    "free disk >= 2x snapshot"),
        PlannedStep("prepare", False,
                    f"while etcd runs: {shlex.join(p.restore_argv)}; copy owner/mode of {live}; {bump}"),
        PlannedStep("fence", True, "stop kube-apiserver and prove it stopped"
                    if apiserver_runtime else "no kube-apiserver configured on this node: nothing to fence"),
        PlannedStep("stop", True, f"stop etcd; prove: client port refuses and {live}/snap/db is lockable"),
        PlannedStep("swap", True, f"rename {live} -> {aside} (kept for rollback); rename {prepared} -> {live}"
                    + (f"; the WAL files in {p.wal_dir} likewise" if p.wal_dir else "")),
        PlannedStep("start", True, "start etcd; wait until healthy"),
        PlannedStep("verify", False, f"revision >= {p.expected_min_revision}; member {p.name} healthy"),
        PlannedStep("unfence", True, "start kube-apiserver"
                    if apiserver_runtime else "no kube-apiserver configured: nothing to start"),
    ]
    return steps


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

