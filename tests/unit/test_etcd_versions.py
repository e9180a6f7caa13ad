"""A member that runs etcd 3.6 or 3.7 is accepted; `check` shows a warning that it was not tested.

No etcd 3.6 or 3.7 can be installed here, so a fake member (tests/helpers/fake_etcd.py) answers
Maintenance/Status with the version string such a member sends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from etcdguard.agent.checks import run_checks
from etcdguard.agent.config import parse_agent_config
from etcdguard.agent.discovery.member import LocalMember

from tests.helpers.fake_etcd import FakeEtcd, status_reply


def etcd_check(version: str, tmp_path: Path) -> tuple[bool, bool, str]:
    config = parse_agent_config({"backup": {"dir": str(tmp_path / "snapshots")}, "state": {"dir": str(tmp_path)},
                                 "server": {"enabled": False}, "bundle": {"enabled": False}}, "agent.toml")
    with FakeEtcd({"Status": lambda _: status_reply(version)}) as fake:
        member = LocalMember(name="cp1", data_dir=tmp_path / "etcd", endpoints=(fake.url,))
        result = next(r for r in run_checks(config, member) if r.name == "etcd")
    return result.ok, result.warning, result.detail


@pytest.mark.parametrize("version", ["3.6.5", "3.7.0"])
def test_a_member_of_etcd_3_6_or_3_7_passes_check_with_a_warning(version: str, tmp_path: Path) -> None:
    ok, warning, detail = etcd_check(version, tmp_path)
    assert ok and warning
    assert f"etcd {version}, revision 42, leader" in detail
    assert f"etcd {version}: not tested with this version (etcdguard is tested with etcd 3.5 and 3.4)" in detail


@pytest.mark.parametrize("version", ["3.5.30", "3.4.23"])
def test_a_tested_version_is_no_warning(version: str, tmp_path: Path) -> None:
    ok, warning, detail = etcd_check(version, tmp_path)
    assert ok and not warning and "not tested" not in detail
