"""The etcd command-line tools both daemons drive: etcdutl (3.5+) or etcdctl (3.4).

Capabilities are detected from the tool itself (`version`, `--help`), never
assumed from a version number alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.errors import ToolError

TOOL_TIMEOUT = 600.0


@dataclass(frozen=True)
class SnapshotTool:
    """A tool that can read and restore snapshot files."""

    path: Path
    kind: str              # "etcdutl" | "etcdctl"
    version: str
    supports_bump: bool    # --bump-revision and --mark-compacted

    def base(self) -> list[str]:
        return [str(self.path)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kind == "etcdctl":
            env["ETCDCTL_API"] = "3"
        return env


def _run(
    argv: list[str], env: Optional[dict[str, str]] = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ToolError(f"{argv[0]}: not found") from None
    except PermissionError:
        raise ToolError(f"{argv[0]}: not executable") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{' '.join(argv[:3])}: timed out after {timeout:.0f}s") from None


def parse_version(output: str) -> str:
    """'etcdutl version: 3.5.16' / 'etcdctl version: 3.4.23' -> '3.5.16'."""
    m = re.search(r"(?:etcdutl|etcdctl) version:\s*(\S+)", output)
    if not m:
        raise ValueError("no version line in the tool's output")
    return m.group(1)


def probe_tool(path: Path) -> SnapshotTool:
    """Ask the tool what it is and what it supports."""
    kind = "etcdutl" if path.name.startswith("etcdutl") else "etcdctl"
    env = dict(os.environ)
    if kind == "etcdctl":
        env["ETCDCTL_API"] = "3"
    out = _run([str(path), "version"], env=env)
    try:
        version = parse_version(out.stdout + out.stderr)
    except ValueError:
        raise ToolError(f"{path}: `version` printed no etcd tool version: {out.stdout.strip()[:200]}") from None
    if out.stdout.startswith("etcdutl"):
        kind = "etcdutl"
    help_out = _run([str(path), "snapshot", "restore", "--help"], env=env)
    text = help_out.stdout + help_out.stderr
    return SnapshotTool(
        path=path, kind=kind, version=version,
        supports_bump="--bump-revision" in text and "--mark-compacted" in text,
    )


def find_tool(configured: Optional[Path] = None, search_path: Optional[str] = None) -> SnapshotTool:
    """The configured tool, else etcdutl on PATH, else etcdctl (3.4 restores with it)."""
    if configured is not None:
        if not configured.exists():
            raise ToolError(f"etcd.restore_tool {configured} does not exist")
        return probe_tool(configured)
    for name in ("etcdutl", "etcdctl"):
        found = shutil.which(name, path=search_path)
        if found:
            return probe_tool(Path(found))
    raise ToolError(
        "neither etcdutl nor etcdctl is on PATH; install etcd's client tools "
        "or set etcd.restore_tool"
    )


def find_status_tool(configured: Optional[Path] = None, search_path: Optional[str] = None) -> SnapshotTool:
    """The tool find_tool would pick, for `snapshot status` alone: found, not run.

    Reading a snapshot's status needs neither the tool's version nor its restore flags, so
    the two probes find_tool runs (`version`, `snapshot restore --help`) are skipped: a one-shot
    `etcdguard-agent snapshot` saves two process starts. The kind comes from the file name;
    ETCDCTL_API=3 is set for etcdctl, as find_tool's tools set it.
    """
    path = configured
    if path is not None:
        if not path.exists():
            raise ToolError(f"etcd.restore_tool {path} does not exist")
    else:
        for name in ("etcdutl", "etcdctl"):
            found = shutil.which(name, path=search_path)
            if found:
                path = Path(found)
                break
    if path is None:
        raise ToolError("neither etcdutl nor etcdctl is on PATH; install etcd's client tools "
                        "or set etcd.restore_tool")
    kind = "etcdutl" if path.name.startswith("etcdutl") else "etcdctl"
    return SnapshotTool(path=path, kind=kind, version="", supports_bump=False)


@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


def parse_snapshot_status(text: str) -> SnapshotStatus:
    """Parse `snapshot status -w json` output."""
    try:
        data: Any = json.loads(text)
        return SnapshotStatus(
            hash=int(data["hash"]), revision=int(data["revision"]),
            total_keys=int(data["totalKey"]), total_size=int(data["totalSize"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unexpected `snapshot status` output: {text.strip()[:200]!r} ({exc})") from None


REASON_CHARS = 300


def failure_reason(output: str) -> str:
    """Pure: the line of a failed etcd tool's output that says why.

    A Go panic prints its reason on the first ``panic:`` line and then a goroutine trace whose tail
    says nothing (etcdctl 3.4 may print a second, nested panic): the first panic line is the reason.
    Else the tool's ``Error:`` line, else a zap log line at level error or fatal, else the last line.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if not lines:
        return "no output"
    chosen = next((ln for ln in lines if ln.startswith("panic: ")), None)
    if chosen is None:
        chosen = next((ln for ln in lines if ln.startswith("Error:")), None)
    if chosen is None:
        for ln in reversed(lines):
            try:
                entry = json.loads(ln)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
                chosen = " ".join(str(entry[k]) for k in ("msg", "error") if entry.get(k))
                break
    if not chosen:
        chosen = lines[-1]
    return chosen if len(chosen) <= REASON_CHARS else chosen[:REASON_CHARS] + "..."


def snapshot_status(tool: SnapshotTool, path: Path) -> SnapshotStatus:
    """Read revision and key count from a snapshot file (read-only)."""
    out = _run(tool.base() + ["snapshot", "status", str(path), "-w", "json"], env=tool.env(), timeout=TOOL_TIMEOUT)
    if out.returncode != 0:
        raise ToolError(f"{tool.kind} snapshot status {path} failed (exit {out.returncode}): "
                        f"{failure_reason(out.stderr or out.stdout)}")
    try:
        # etcdctl 3.5 prints a deprecation line before the JSON; take the JSON line.
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("{"))
        return parse_snapshot_status(line)
    except (StopIteration, ValueError) as exc:
        raise ToolError(f"{tool.kind} snapshot status {path}: {exc}") from None


def restore_argv(
    tool: SnapshotTool, snapshot: Path, data_dir: Path, *, name: str, initial_cluster: str,
    token: str, peer_url: str, bump_revision: int, wal_dir: Optional[Path] = None,
) -> list[str]:
    """The exact restore command; pure, so `--plan` can print it."""
    argv = tool.base() + [
        "snapshot", "restore", str(snapshot),
        "--data-dir", str(data_dir),
        "--name", name,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-token", token,
        "--initial-advertise-peer-urls", peer_url,
    ]
    if wal_dir is not None:
        argv += ["--wal-dir", str(wal_dir)]
    if bump_revision > 0 and tool.supports_bump:
        argv += ["--bump-revision", str(bump_revision), "--mark-compacted"]
    return argv
