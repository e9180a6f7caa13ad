"""`etcdguard-agent check` against a real etcd: exit codes and the problems it names."""

from __future__ import annotations

import json
from pathlib import Path

from etcdguard.common.wire import keys

from tests.helpers.agentconf import agent_sections, run_agent, write_agent_config
from tests.helpers.etcd import EtcdMember


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
