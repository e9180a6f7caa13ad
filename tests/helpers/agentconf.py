"""Agent config files for tests, pointing at a harness etcd member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from .etcd import EtcdMember

AGENT = [sys.executable, "-m", "etcdguard.agent"]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def render_toml(sections: dict[str, Any]) -> str:
    """Tables, and arrays of tables (a list of dicts becomes ``[[name]]`` entries)."""
    out = []
    for name, keys in sections.items():
        for entry, header in ([(k, f"[[{name}]]") for k in keys] if isinstance(keys, list) else [(keys, f"[{name}]")]):
            out.append(header)
            out += [f"{k} = {toml_value(v)}" for k, v in entry.items() if v is not None]
            out.append("")
    return "\n".join(out)


def agent_sections(member: EtcdMember, workdir: Path, runtime: Optional[str] = "process") -> dict[str, dict[str, Any]]:
    """A complete agent config for ``member``, the process runtime and a store under ``workdir``."""
    etcd: dict[str, Any] = {
        "name": member.name,
        "data_dir": str(member.data_dir),
        "endpoints": [member.client_url],
        "peer_url": member.peer_url,
        "restore_tool": str(member.build.restore_tool),
    }
    if runtime == "process":
        etcd.update(runtime="process", start_command=member.command, pid_file=str(workdir / "etcd.pid"))
    if member.tls is not None:
        t = member.tls
        etcd.update(cacert=str(t.ca_cert), cert=str(t.client_cert), key=str(t.client_key))
    return {
        "etcd": etcd,
        "backup": {"dir": str(workdir / "snapshots"), "interval": "1h", "keep": 24},
        "server": {"enabled": False},
        "metrics": {"enabled": False},
        "state": {"dir": str(workdir / "state")},
    }


def write_agent_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    path.write_text(render_toml(sections))
    return path


def adopt(member: EtcdMember, pid_file: Path) -> None:
    """Record the harness-started etcd's pid so the process runtime adopts it."""
    assert member.pid is not None
    pid_file.write_text(f"{member.pid}\n")


def run_agent(*args: str, timeout: float = 120, env: Optional[dict[str, str]] = None,
              check: bool = False) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          check=check)
