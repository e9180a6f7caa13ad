"""Which etcd the coordinator's scratch members run ([scratch], else PATH), and the error without one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from etcdguard.common.base.errors import ConfigError, ToolError
from etcdguard.coordinator.config import CoordinatorConfig, parse_coordinator_config
from etcdguard.coordinator.scratch import scratch_binaries, scratch_dir

from tests.helpers.etcd import build_for, missing_build_reason


def parsed(scratch: dict[str, Any]) -> CoordinatorConfig:
    return parse_coordinator_config({"coordinator": {"state_dir": "/var/lib/x"}, "scratch": scratch}, "test.toml")


def test_without_an_etcd_anywhere_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match=r"etcd-server.*\[scratch\] etcd"):
        scratch_binaries(parsed({}))
    with pytest.raises(ToolError, match="does not exist"):
        scratch_binaries(parsed({"etcd": str(tmp_path / "etcd")}))


def test_a_configured_etcd_brings_the_tool_of_its_own_release() -> None:
    build = build_for("3.5")
    if build is None:
        pytest.skip(missing_build_reason("3.5"))
    assert build is not None
    binaries = scratch_binaries(parsed({"etcd": str(build.etcd)}))
    assert binaries.etcd == build.etcd
    assert binaries.tool.path.parent == build.etcd.parent and binaries.tool.version.startswith("3.5")


def test_scratch_dir_defaults_under_the_state_dir_and_unknown_keys_are_refused() -> None:
    assert scratch_dir(parsed({})) == Path("/var/lib/x/scratch")
    assert scratch_dir(parsed({"dir": "/srv/scratch"})) == Path("/srv/scratch")
    with pytest.raises(ConfigError, match="scratch"):
        parsed({"etcd_bin": "/usr/bin/etcd"})
