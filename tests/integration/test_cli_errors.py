"""Every command, run as a script would: an error under --json is one JSON object on stdout
(``{"error": ..., "exit": N}``), the same text on stderr, and no traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.agentconf import AGENT, render_toml
from tests.helpers.coordinator import CTL, DAEMON


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)


def _coordinator_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(render_toml({
        "coordinator": {"state_dir": str(tmp_path / "state"), "insecure": True,
                        "control_socket": str(tmp_path / "run" / "c.sock")},
        "vault": {"dir": str(tmp_path / "vault")}, "metrics": {"enabled": False},
    }) + '[[members]]\nname = "m1"\nagent = "tcp://127.0.0.1:9"\n')
    return cfg


@pytest.mark.parametrize("case", [
    "agent-no-config", "agent-usage", "agent-two-endpoints", "agent-snapshots-no-config",
    "ctl-no-daemon", "ctl-no-config", "ctl-bad-ref", "coordinator-check-no-config",
])
def test_json_errors_are_one_object_on_stdout(tmp_path, case):
    missing = str(tmp_path / "missing.toml")
    cfg = str(_coordinator_config(tmp_path))
    cmd, code, text = {
        "agent-no-config": ([*AGENT, "check", "--json", "--config", missing], 2, "config file not found"),
        "agent-usage": ([*AGENT, "verify", "--json"], 2, "the following arguments are required: FILE"),
        "agent-two-endpoints": ([*AGENT, "snapshot", "--json", "--output", str(tmp_path / "x.db"),
                                 "--endpoints", "http://a:1,http://b:2"], 2, "exactly one member"),
        "agent-snapshots-no-config": ([*AGENT, "snapshots", "--json", "--config", missing], 2, "missing.toml"),
        "ctl-no-daemon": ([*CTL, "status", "--json", "--config", cfg], 1, "c.sock"),
        "ctl-no-config": ([*CTL, "snapshots", "--json", "--config", missing], 2, "config file not found"),
        "ctl-bad-ref": ([*CTL, "restore", "--json", "--plan", "--yes", "latest", "--config", cfg], 2,
                        "give --plan or --yes, not both"),
        "coordinator-check-no-config": ([*DAEMON, "check", "--json", "--config", missing], 2,
                                        "config file not found"),
    }[case]
    r = _run(cmd)
    assert r.returncode == code, r.stdout + r.stderr
    doc = json.loads(r.stdout)   # exactly one JSON document
    assert set(doc) == {"error", "exit"} and doc["exit"] == code and text in doc["error"], doc
    assert text in r.stderr and "Traceback" not in r.stderr


def test_without_json_stdout_stays_empty(tmp_path):
    r = _run([*AGENT, "check", "--config", str(tmp_path / "missing.toml")])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].startswith("etcdguard-agent: error: ")
