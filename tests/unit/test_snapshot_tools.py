"""Which etcd tool reads and restores snapshots, and which etcd versions are accepted.

Stand-in tools (shell scripts) answer `version`, `snapshot restore --help` and `snapshot status`
the way etcdutl and etcdctl of a given version do, and append every call to a log. A stand-in
etcdctl fails every call: wherever an etcdutl is present, nothing may call etcdctl for a
snapshot (etcd 3.6 removed `snapshot status` and `snapshot restore` from etcdctl).
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Optional

import pytest
from etcdguard.common.base.errors import ToolError
from etcdguard.common.snapshot.tools import (
    find_status_tool,
    find_tool,
    locate_tool,
    parse_version,
    restore_argv,
    snapshot_status,
    untested_version,
    version_tuple,
)

STATUS_JSON = '{"hash":1234,"revision":42,"totalKey":7,"totalSize":20480}'
HELP = "      --bump-revision uint\n      --mark-compacted\n      --data-dir string\n"


def stand_in(directory: Path, name: str, version: str, log: Path, *, works: bool = True,
             kind: Optional[str] = None) -> Path:
    """An executable ``directory/name`` that says it is ``kind`` (default: its name) of ``version``."""
    directory.mkdir(parents=True, exist_ok=True)
    kind = kind or name
    series = ".".join(version.split(".")[:2])
    path = directory / name
    body = [
        "#!/bin/sh",
        f'echo "$0 $*" >> {shlex.quote(str(log))}',
    ]
    if not works:
        body.append('echo "Error: this stand-in etcdctl must not be called" >&2; exit 1')
    body += [
        'case "$1" in',
        f'  version) printf "{kind} version: {version}\\nAPI version: {series}\\n";;',
        f'  snapshot) case "$2 $3" in "restore --help") printf "{HELP}";; '
        f"status*) echo '{STATUS_JSON}';; *) exit 0;; esac;;",
        '  *) echo "unknown command $1" >&2; exit 1;;',
        "esac",
    ]
    path.write_text("\n".join(body) + "\n")
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def both(tmp_path: Path) -> tuple[Path, Path, Path]:
    """etcdutl 3.5.30 and a failing etcdctl in one bin dir; (bin dir, etcdutl's log, etcdctl's log)."""
    bin_dir = tmp_path / "bin"
    utl_log, ctl_log = tmp_path / "etcdutl.log", tmp_path / "etcdctl.log"
    stand_in(bin_dir, "etcdutl", "3.5.30", utl_log)
    stand_in(bin_dir, "etcdctl", "3.5.30", ctl_log, works=False)
    return bin_dir, utl_log, ctl_log


# -- etcdutl wherever one is present ------------------------------------------------------------


def test_with_etcdutl_and_etcdctl_on_the_path_only_etcdutl_reads_and_restores(
        both: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bin_dir, utl_log, ctl_log = both
    snap = tmp_path / "s.db"
    snap.write_bytes(b"x" * 64)
    tool = find_tool(search_path=str(bin_dir))
    assert (tool.path, tool.kind, tool.version, tool.supports_bump) == (bin_dir / "etcdutl", "etcdutl", "3.5.30", True)
    assert snapshot_status(tool, snap).revision == 42
    quick = find_status_tool(search_path=str(bin_dir))
    assert (quick.path, quick.kind) == (bin_dir / "etcdutl", "etcdutl")
    assert snapshot_status(quick, snap).total_keys == 7
    argv = restore_argv(tool, snap, tmp_path / "restored", name="m1", initial_cluster="m1=http://127.0.0.1:2380",
                        token="t", peer_url="http://127.0.0.1:2380", bump_revision=1000)
    assert argv[:3] == [str(bin_dir / "etcdutl"), "snapshot", "restore"]
    assert argv[-3:] == ["--bump-revision", "1000", "--mark-compacted"]
    assert calls(ctl_log) == []
    assert any("snapshot status" in c for c in calls(utl_log))


def test_etcdctl_earlier_on_the_path_than_etcdutl_is_not_used(tmp_path: Path) -> None:
    ctl_log = tmp_path / "etcdctl.log"
    stand_in(tmp_path / "first", "etcdctl", "3.6.5", ctl_log, works=False)
    stand_in(tmp_path / "second", "etcdutl", "3.6.5", tmp_path / "etcdutl.log")
    search = f"{tmp_path / 'first'}{os.pathsep}{tmp_path / 'second'}"
    assert find_tool(search_path=search).path == tmp_path / "second" / "etcdutl"
    assert find_status_tool(search_path=search).path == tmp_path / "second" / "etcdutl"
    assert calls(ctl_log) == []


def test_a_configured_etcdctl_gives_way_to_the_etcdutl_beside_it(both: tuple[Path, Path, Path],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    bin_dir, _, ctl_log = both
    with caplog.at_level(logging.WARNING):
        tool = find_tool(bin_dir / "etcdctl", search_path="")
    assert (tool.path, tool.kind) == (bin_dir / "etcdutl", "etcdutl")
    assert find_status_tool(bin_dir / "etcdctl", search_path="").path == bin_dir / "etcdutl"
    assert calls(ctl_log) == []
    assert "is etcdctl, but etcdutl is present" in caplog.text


def test_a_configured_etcdctl_gives_way_to_an_etcdutl_on_the_path(tmp_path: Path) -> None:
    ctl_log = tmp_path / "etcdctl.log"
    configured = stand_in(tmp_path / "old", "etcdctl", "3.5.30", ctl_log, works=False)
    stand_in(tmp_path / "new", "etcdutl", "3.6.5", tmp_path / "etcdutl.log")
    assert locate_tool(configured, search_path=str(tmp_path / "new")) == tmp_path / "new" / "etcdutl"
    assert find_tool(configured, search_path=str(tmp_path / "new")).kind == "etcdutl"
    assert calls(ctl_log) == []


def test_etcdctl_restores_only_where_no_etcdutl_exists(tmp_path: Path) -> None:
    """etcd 3.4: no etcdutl at all, so etcdctl reads and restores (found on the path, or configured)."""
    log = tmp_path / "etcdctl.log"
    ctl = stand_in(tmp_path / "bin", "etcdctl", "3.4.23", log)
    for tool in (find_tool(search_path=str(tmp_path / "bin")), find_tool(ctl, search_path="")):
        assert (tool.path, tool.kind, tool.version, tool.env()["ETCDCTL_API"]) == (ctl, "etcdctl", "3.4.23", "3")
    assert find_status_tool(ctl, search_path="").kind == "etcdctl"


def test_a_configured_wrapper_is_used_as_it_is(both: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bin_dir, _, _ = both
    wrapper = stand_in(tmp_path / "wrap", "restore-wrapper", "3.5.30", tmp_path / "wrapper.log", kind="etcdutl")
    tool = find_tool(wrapper, search_path=str(bin_dir))
    assert (tool.path, tool.kind) == (wrapper, "etcdutl")


def test_an_etcdctl_of_3_6_without_etcdutl_is_refused_naming_etcdutl(tmp_path: Path) -> None:
    ctl = stand_in(tmp_path / "bin", "etcdctl", "3.6.5", tmp_path / "etcdctl.log")
    with pytest.raises(ToolError, match=r"etcdctl 3\.6\.5 cannot read or restore snapshot files.*install etcdutl"):
        find_tool(ctl, search_path="")


def test_no_tool_at_all_names_etcdutl_and_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"neither etcdutl nor etcdctl.*etcd\.restore_tool"):
        find_tool(search_path=str(tmp_path))
    with pytest.raises(ToolError, match=r"etcd\.restore_tool .* does not exist"):
        find_status_tool(tmp_path / "etcdutl")


# -- versions: 3.6 and 3.7 accepted with a warning --------------------------------------------------


@pytest.mark.parametrize(("output", "version"), [
    ("etcdutl version: 3.6.5\nAPI version: 3.6\n", "3.6.5"),
    ("etcdutl version: 3.7.0\nAPI version: 3.7\n", "3.7.0"),
    ("etcdctl version: 3.4.23\nAPI version: 3.4\n", "3.4.23"),
    ("etcd Version: 3.6.5\nGit SHA: 1b4de5d\nGo Version: go1.24.6\nGo OS/Arch: linux/amd64\n", "3.6.5"),
    ("etcd Version: 3.5.30\nGit SHA: Not provided (use ./build instead of go build)\n", "3.5.30"),
])
def test_parse_version(output: str, version: str) -> None:
    assert parse_version(output) == version


def test_parse_version_needs_a_version_line() -> None:
    with pytest.raises(ValueError):
        parse_version("API version: 3.6\n")


@pytest.mark.parametrize(("version", "tested"), [
    ("3.4.23", True), ("3.5.30", True), ("3.5.0", True), ("3.6.5", False), ("3.7.0", False),
    ("3.7.0-rc.0", False), ("3.3.27", False), ("garbage", False),
])
def test_untested_versions_are_a_warning_never_a_refusal(version: str, tested: bool) -> None:
    warning = untested_version(version)
    if tested:
        assert warning is None
    else:
        assert warning is not None and "not tested with this version" in warning and version in warning


def test_version_tuple() -> None:
    assert version_tuple("3.6.5") == (3, 6, 5)
    assert version_tuple("v3.7.0-rc.0") == (3, 7, 0)
    assert version_tuple("3.6") == (3, 6, 0)
    assert version_tuple("unknown") is None


@pytest.mark.parametrize("version", ["3.6.5", "3.7.0"])
def test_etcdutl_of_3_6_and_3_7_is_accepted_with_a_warning(version: str, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    utl = stand_in(tmp_path / "bin", "etcdutl", version, tmp_path / "etcdutl.log")
    with caplog.at_level(logging.WARNING):
        tool = find_tool(search_path=str(tmp_path / "bin"))
    assert (tool.path, tool.kind, tool.version, tool.supports_bump) == (utl, "etcdutl", version, True)
    assert f"etcd {version}: not tested with this version" in caplog.text


def test_a_tested_version_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stand_in(tmp_path / "bin", "etcdutl", "3.5.30", tmp_path / "etcdutl.log")
    with caplog.at_level(logging.WARNING):
        find_tool(search_path=str(tmp_path / "bin"))
    assert "not tested" not in caplog.text
