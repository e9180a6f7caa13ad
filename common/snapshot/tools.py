"""The etcd command-line tools both daemons drive: etcdutl (3.5+) or etcdctl (3.4).

Capabilities are detected from the tool itself (`version`, `--help`), never
assumed from a version number alone.

Wherever an etcdutl is present it reads and restores snapshot files, never
etcdctl: etcdctl's `snapshot status` and `snapshot restore` are deprecated in
3.5 and gone in 3.6. etcdctl does that work only where no etcdutl exists (etcd
3.4), also when ``etcd.restore_tool`` names an etcdctl that has an etcdutl
beside it or on the search path.

Versions: etcdguard is tested with etcd 3.5 and 3.4 (`TESTED_SERIES`). Any
other version (3.6 and 3.7 above all) is accepted, with a warning that says it
was not tested with it (`untested_version`); nothing refuses a version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.errors import ToolError

log = logging.getLogger(__name__)

TOOL_TIMEOUT = 600.0
ETCDUTL, ETCDCTL = "etcdutl", "etcdctl"
TESTED_SERIES = ((3, 4), (3, 5))   # the etcd minor versions the project's tests run against
NO_TOOL = ("neither etcdutl nor etcdctl is on PATH; install etcd's client tools (etcdutl) "
           "or set etcd.restore_tool")


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
        if self.kind == ETCDCTL:
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
    """The version in `etcdutl version`, `etcdctl version` or `etcd --version` output.

    'etcdutl version: 3.6.5\nAPI version: 3.6' -> '3.6.5'; 'etcdctl version: 3.4.23' -> '3.4.23';
    'etcd Version: 3.5.30\nGit SHA: ...' -> '3.5.30'.
    """
    m = re.search(r"^\s*(?:etcdutl|etcdctl|etcd) [Vv]ersion:\s*(\S+)", output, re.MULTILINE)
    if not m:
        raise ValueError("no version line in the tool's output")
    return m.group(1)


def version_tuple(version: str) -> Optional[tuple[int, int, int]]:
    """'3.6.5' -> (3, 6, 5); 'v3.7.0-rc.0' -> (3, 7, 0); None when it is not an etcd version."""
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def untested_version(version: str) -> Optional[str]:
    """Pure: None for a version the project tests (3.4, 3.5), else the warning to log and show.

    Never a refusal: etcd 3.6 and 3.7 (Kubernetes 1.34 and later, k3s, RKE2) keep every API and
    snapshot format etcdguard uses, and their offline work is done with etcdutl.
    """
    parsed = version_tuple(version)
    if parsed is not None and parsed[:2] in TESTED_SERIES:
        return None
    tested = " and ".join(f"{major}.{minor}" for major, minor in reversed(TESTED_SERIES))
    what = f"etcd {version}" if parsed is not None else f"etcd version {version!r} (unreadable)"
    return f"{what}: not tested with this version (etcdguard is tested with etcd {tested})"


def tool_kind(path: Path) -> Optional[str]:
    """"etcdutl" or "etcdctl" from the file's name; None for another name (a wrapper: its output says)."""
    for kind in (ETCDUTL, ETCDCTL):
        if path.name.startswith(kind):
            return kind
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _etcdutl_for(etcdctl: Path, search_path: Optional[str]) -> Optional[Path]:
    """The etcdutl to use instead of ``etcdctl``: the one beside it, else one on the search path."""
    beside = etcdctl.parent / ETCDUTL
    if _executable(beside):
        return beside
    found = shutil.which(ETCDUTL, path=search_path)
    return Path(found) if found else None


def locate_tool(configured: Optional[Path] = None, search_path: Optional[str] = None) -> Path:
    """Where the snapshot tool is: etcdutl wherever one is present, else etcdctl (etcd 3.4).

    A configured etcdctl is replaced by the etcdutl beside it or on the search path (with a
    warning): etcdctl's `snapshot status` and `snapshot restore` are gone in etcd 3.6. Any other
    configured file (etcdutl, a wrapper) is used as it is.
    """
    if configured is not None:
        if not configured.exists():
            raise ToolError(f"etcd.restore_tool {configured} does not exist")
        if tool_kind(configured) != ETCDCTL:
            return configured
        etcdutl = _etcdutl_for(configured, search_path)
        if etcdutl is None:
            return configured
        log.warning("etcd.restore_tool %s is etcdctl, but etcdutl is present: %s reads and restores snapshots "
                    "(etcdctl's snapshot status and restore are deprecated in 3.5 and gone in 3.6); "
                    "set etcd.restore_tool to it", configured, etcdutl)
        return etcdutl
    for name in (ETCDUTL, ETCDCTL):
        found = shutil.which(name, path=search_path)
        if found:
            return Path(found)
    raise ToolError(NO_TOOL)


def probe_tool(path: Path) -> SnapshotTool:
    """Ask the tool what it is and what it supports.

    A version the project does not test is logged as a warning and accepted; an etcdctl of
    3.6 or later is refused, because it has no snapshot commands left to run.
    """
    kind = tool_kind(path) or ETCDCTL
    env = dict(os.environ)
    if kind == ETCDCTL:
        env["ETCDCTL_API"] = "3"
    out = _run([str(path), "version"], env=env)
    try:
        version = parse_version(out.stdout + out.stderr)
    except ValueError:
        raise ToolError(f"{path}: `version` printed no etcd tool version: {out.stdout.strip()[:200]}") from None
    if out.stdout.lstrip().startswith(ETCDUTL):
        kind = ETCDUTL
    parsed = version_tuple(version)
    if kind == ETCDCTL and parsed is not None and parsed[:2] >= (3, 6):
        raise ToolError(f"{path}: etcdctl {version} cannot read or restore snapshot files (etcd 3.6 moved "
                        "`snapshot status` and `snapshot restore` to etcdutl); install etcdutl or set "
                        "etcd.restore_tool to it")
    untested = untested_version(version)
    if untested is not None:
        log.warning("%s (%s %s): %s", path, kind, version, untested)
    help_out = _run([str(path), "snapshot", "restore", "--help"], env=env)
    text = help_out.stdout + help_out.stderr
    return SnapshotTool(
        path=path, kind=kind, version=version,
        supports_bump="--bump-revision" in text and "--mark-compacted" in text,
    )


def find_tool(configured: Optional[Path] = None, search_path: Optional[str] = None) -> SnapshotTool:
    """The tool that reads and restores snapshots here (`locate_tool`), probed."""
    return probe_tool(locate_tool(configured, search_path))


def find_status_tool(configured: Optional[Path] = None, search_path: Optional[str] = None) -> SnapshotTool:
    """The tool find_tool would pick, for `snapshot status` alone: found, not run.

    Reading a snapshot's status needs neither the tool's version nor its restore flags, so
    the two probes find_tool runs (`version`, `snapshot restore --help`) are skipped: a one-shot
    `etcdguard-agent snapshot` saves two process starts. The kind comes from the file name;
    ETCDCTL_API=3 is set for etcdctl, as find_tool's tools set it.
    """
    path = locate_tool(configured, search_path)
    return SnapshotTool(path=path, kind=tool_kind(path) or ETCDCTL, version="", supports_bump=False)


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
