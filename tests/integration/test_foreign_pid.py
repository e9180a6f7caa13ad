"""Another member's etcd pid in the pid file is never signalled (issue 9 item 10).

Two real etcd members on loopback, A and B. A's process runtime is handed B's pid: a stop, an adoption
or a whole `etcdguard-agent restore` of A refuses, names why (the command line names another data dir,
the pid does not hold A's bbolt lock), and both members keep running with the same pids.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from etcdguard.agent.config import AgentConfig, EtcdSettings
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.runtime.base import NotOurProcess
from etcdguard.agent.runtime.factory import make_runtime
from etcdguard.agent.runtime.process import ProcessService

from tests.conftest import EtcdFactory
from tests.helpers.agentconf import AGENT, agent_sections, write_agent_config
from tests.helpers.etcd import EtcdBuild, EtcdMember


def runtime_for(member: EtcdMember, pid_file: Path, state: Path) -> ProcessService:
    config = AgentConfig(etcd=EtcdSettings(runtime="process", start_command=tuple(member.command), pid_file=pid_file))
    local = LocalMember(name=member.name, data_dir=member.data_dir, endpoints=(member.client_url,))
    service = make_runtime(config, local, state).etcd
    assert isinstance(service, ProcessService)
    return service


def assert_untouched(*members: EtcdMember) -> None:
    for m in members:
        assert m.pid is not None and m.pids() == [m.pid], f"{m.name}: {m.pids()} (was {m.pid})"
        assert m.healthy(), f"{m.name} is not healthy any more"


def test_stop_and_adopt_refuse_another_members_etcd(etcd_factory: EtcdFactory, etcd_build: EtcdBuild,
                                                    tmp_path: Path) -> None:
    a = etcd_factory.member(etcd_build, name="a")
    b = etcd_factory.member(etcd_build, name="b")
    assert a.pid is not None and b.pid is not None
    pid_file = tmp_path / "run" / "etcd.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{b.pid}\n")
    svc = runtime_for(a, pid_file, tmp_path / "state")

    assert not svc.is_running()   # B's pid is not A's etcd
    with pytest.raises(NotOurProcess) as info:
        svc.stop(10)
    message = str(info.value)
    assert f"names pid {b.pid} (etcd), which is not this member's etcd" in message
    assert f"names data dir {b.data_dir}, not {a.data_dir}" in message
    assert f"does not hold the lock on {a.data_dir}/member/snap/db (held by pid {a.pid} (etcd))" in message
    assert "Nothing was signalled" in message
    with pytest.raises(NotOurProcess, match="not this member's etcd"):
        svc.adopt(b.pid)
    assert_untouched(a, b)
    assert pid_file.read_text().strip() == str(b.pid)

    # start finds A's own etcd (its exact command, holding A's lock) and records it instead of B's pid
    svc.start(10)
    assert pid_file.read_text().strip() == str(a.pid)
    assert svc.running_pid() == a.pid
    assert_untouched(a, b)


@pytest.mark.parametrize("etcd_build", ["3.4"], indirect=True)
def test_a_restore_never_kills_another_member(etcd_factory: EtcdFactory, etcd_build: EtcdBuild,
                                              tmp_path: Path) -> None:
    a = etcd_factory.member(etcd_build, name="a")
    b = etcd_factory.member(etcd_build, name="b")
    a.put("/a/kept", "yes")
    b.put("/b/kept", "yes")
    sections = agent_sections(a, tmp_path)
    sections["restore"] = {"stop_timeout": "10s", "start_timeout": "30s"}
    sections["bundle"] = {"enabled": False}
    cfg = write_agent_config(tmp_path / "agent.toml", sections)
    (tmp_path / "etcd.pid").write_text(f"{b.pid}\n")   # B's pid where A's should be
    taken = subprocess.run([*AGENT, "--config", str(cfg), "snapshot", "--json"], capture_output=True, text=True,
                           timeout=120, check=False)
    assert taken.returncode == 0, taken.stderr
    r = subprocess.run([*AGENT, "--config", str(cfg), "restore", json.loads(taken.stdout)["path"], "--yes"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 3, r.stderr
    assert "step stop failed" in r.stderr and "which is not this member's etcd" in r.stderr, r.stderr
    assert f"names data dir {b.data_dir}, not {a.data_dir}" in r.stderr
    assert "Nothing was signalled" in r.stderr and "Traceback" not in r.stderr
    assert_untouched(a, b)
    assert a.get("/a/kept") == "yes" and b.get("/b/kept") == "yes"
