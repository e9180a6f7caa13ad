"""`etcdguard-agent check` against a real etcd: exit codes and the problems it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etcdguard.common.wire import keys

from tests.conftest import EtcdFactory
from tests.helpers.agentconf import agent_sections, run_agent, write_agent_config
from tests.helpers.etcd import EtcdBuild, EtcdMember


def check(cfg: Path) -> tuple[int, dict]:
    r = run_agent("--config", str(cfg), "check", "--json")
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr}


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_check_clean_then_names_each_problem(etcd_member: EtcdMember, tmp_path: Path) -> None:
    sections = agent_sections(etcd_member, tmp_path, runtime=None)
    _, agent_secret = keys.generate("agent", tmp_path / "keys")
    authorized = tmp_path / "keys" / "authorized"
    authorized.mkdir()
    sections["server"] = {"listen": "tcp://127.0.0.1:0", "secret_key": str(agent_secret),
                          "authorized_keys": str(authorized)}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)

    # No coordinator key authorized yet: a problem, named.
    rc, report = check(cfg)
    assert rc == 1
    assert not by_name(report)["control server"]["ok"]
    assert "no coordinator .key file" in by_name(report)["control server"]["detail"]
    assert report["member"]["name"] == etcd_member.name

    coord_pub, _ = keys.generate("coordinator", tmp_path / "coord")
    (authorized / "coordinator.key").write_bytes(coord_pub.read_bytes())
    rc, report = check(cfg)
    assert rc == 0, report
    assert all(c["ok"] for c in report["checks"])
    assert "1 authorized coordinator key(s)" in by_name(report)["control server"]["detail"]
    assert f"revision {etcd_member.revision()}" in by_name(report)["etcd"]["detail"]

    # etcd down and a missing data dir are each reported; the config itself is fine (exit 1, not 2).
    etcd_member.stop(kill=True)
    sections["etcd"]["data_dir"] = str(tmp_path / "nowhere")
    write_agent_config(cfg, sections)
    rc, report = check(cfg)
    assert rc == 1
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"etcd", "data dir"}


def test_check_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[backup]\nkeep = 'many'\n")
    r = run_agent("--config", str(cfg), "check")
    assert r.returncode == 2
    assert "backup.keep: expected an integer >= 1" in r.stderr


@pytest.mark.parametrize("version", ["3.6.5", "3.7.0"])
def test_check_accepts_an_untested_etcdutl_version_with_a_warning(etcd_factory: EtcdFactory, etcd35_build: EtcdBuild,
                                                                   tmp_path: Path, version: str) -> None:
    """An etcdutl of 3.6 or 3.7 (as Kubernetes 1.34+, k3s and RKE2 ship) is used, and `check` warns."""
    assert etcd35_build.etcdutl is not None
    member = etcd_factory.member(etcd35_build)
    member.put("/k", "v")
    tool = tmp_path / "bin" / "etcdutl"
    tool.parent.mkdir()
    series = version.rsplit(".", 1)[0]
    tool.write_text(f'#!/bin/sh\nif [ "$1" = version ]; then printf "etcdutl version: {version}\\nAPI version: '
                    f'{series}\\n"; exit 0; fi\nexec {etcd35_build.etcdutl} "$@"\n')
    tool.chmod(0o755)
    sections = agent_sections(member, tmp_path, runtime=None)
    sections["etcd"]["restore_tool"] = str(tool)
    cfg = write_agent_config(tmp_path / "agent.toml", sections)

    rc, report = check(cfg)
    assert rc == 0, report                                   # a warning, not a problem
    restore_tool = by_name(report)["restore tool"]
    assert restore_tool["ok"] and restore_tool["warning"]
    assert f"etcdutl {version}, supports --bump-revision" in restore_tool["detail"]
    assert f"etcd {version}: not tested with this version" in restore_tool["detail"]
    text = run_agent("--config", str(cfg), "check")
    assert text.returncode == 0
    assert f"WARN restore tool: {tool} (etcdutl {version}" in text.stdout
    assert "not tested with this version" in text.stderr   # logged as well

    # The tool is used: a snapshot reads its revision with it.
    snap = json.loads(run_agent("--config", str(cfg), "snapshot", "--json", check=True).stdout)
    assert snap["revision"] == member.revision() and snap["revision_source"] == "snapshot-status"
