"""`etcdguard-coordinator check` against real agents: typed results, exit 0 / 1 / 2, `--json`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.agentconf import render_toml
from tests.helpers.agents import AgentProcess, CoordinatorKeys
from tests.helpers.coordinator import DAEMON, coordinator_config
from tests.helpers.net import free_port, wait_until


def check(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DAEMON, "check", "--config", str(cfg), *extra], check=False, capture_output=True,
                          text=True, timeout=120)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_coordinator_check_reaches_each_agent(etcd_factory, etcd_build, tmp_path):
    m1 = etcd_factory.member(etcd_build, name="m1")
    m2 = etcd_factory.member(etcd_build, name="m2")
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    agents = [AgentProcess(m, tmp_path / f"agent-{m.name}", authorized=[ckeys.public_path], seed=False)
              for m in (m1, m2)]
    try:
        for a in agents:
            a.start()
        cfg = coordinator_config(tmp_path, ckeys, agents, free_port())
        r = check(cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "all checks passed" in r.stdout
        assert "ok   agent m1: tcp://" in r.stdout and "etcd " + etcd_build.version + " healthy" in r.stdout
        report = json.loads(check(cfg, "--json").stdout)
        assert report["ok"] is True
        checks = by_name(report)
        assert set(checks) >= {"coordinator key", "key m1", "key m2", "state dir", "control socket", "vault",
                               "agent m1", "agent m2"}
        assert "lists 0 snapshot(s)" in checks["vault"]["detail"]
        # an agent down, another that does not know this coordinator's key: exit 1, each named
        agents[0].stop()
        (agents[1].authorized_dir / ckeys.public_path.name).unlink()
        wait_until(lambda: "authorized keys reloaded" in agents[1].log_text(), 20, what="m2's agent to see the change")
        r = check(cfg, "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        checks = by_name(json.loads(r.stdout))
        assert not checks["agent m1"]["ok"] and "did not answer ping" in checks["agent m1"]["detail"]
        assert not checks["agent m2"]["ok"] and "authorized_keys" in checks["agent m2"]["hint"]
        assert checks["vault"]["ok"] and checks["coordinator key"]["ok"]
        # a member entry that points at another member's agent
        agents[1].authorize(ckeys.public_path)
        wait_until(lambda: agents[1].log_text().count("authorized keys reloaded") == 2, 20,
                   what="m2's agent to admit the key again")
        text = cfg.read_text().replace(agents[1].endpoint, "tcp://127.0.0.1:9")
        text = text.replace(f'agent = "{agents[0].endpoint}"', f'agent = "{agents[1].endpoint}"')
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(text.replace(str(agents[0].key_dir / "agent.key"), str(agents[1].key_dir / "agent.key")))
        checks = by_name(json.loads(check(wrong, "--json").stdout))
        assert "serves member 'm2', not 'm1'" in checks["agent m1"]["detail"]
    finally:
        for a in agents:
            a.stop()


def test_coordinator_check_problems_without_agents(tmp_path):
    ckeys = CoordinatorKeys.create(tmp_path / "ckeys")
    os.chmod(ckeys.secret_path, 0o644)
    world = tmp_path / "world"
    world.mkdir()
    os.chmod(world, 0o777)
    cfg = tmp_path / "c.toml"
    cfg.write_text(render_toml({
        "coordinator": {"state_dir": str(tmp_path / "state"), "control_socket": str(world / "c.sock"),
                        "secret_key": str(ckeys.secret_path), "request_timeout": "1s"},
        "vault": {"dir": str(tmp_path / "vault")},
        "metrics": {"enabled": False},
    }) + f'[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\npublic_key = "{tmp_path / "m1.key"}"\n')
    r = check(cfg, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    checks = by_name(json.loads(r.stdout))
    assert "readable by other users" in checks["coordinator key"]["detail"]
    assert "no such file" in checks["key m1"]["detail"]
    assert "world-writable" in checks["control socket"]["detail"]
    assert checks["agent m1"]["detail"] == "not tried: the keys above did not load"
    assert checks["state dir"]["ok"] and checks["vault"]["ok"]
    # a config that cannot be read is exit 2, and one JSON object on stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[coordinator\n")
    r = check(bad, "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["exit"] == 2 and "bad.toml" in json.loads(r.stdout)["error"]
    assert "bad.toml" in r.stderr and "Traceback" not in r.stderr
