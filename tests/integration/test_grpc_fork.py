"""A daemon with gRPC calls in flight forks to exec its tools (etcdutl, etcd) many times a day; gRPC's fork
handlers must not abort those children (grpcio >= 1.80 did: grpc/grpc#43055). A real etcd, real calls from
three threads, and 250 real fork+exec with a preexec function, as agent/restore/toolproc.py runs etcdutl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdMember, clean_env

SCRIPT = r"""
import os, subprocess, sys, threading
from etcdguard.common.etcd.client import EtcdClient

stop = False

def calls():
    client = EtcdClient(sys.argv[1])
    while not stop:
        client.status(timeout=2)

threads = [threading.Thread(target=calls, daemon=True) for _ in range(3)]
for t in threads:
    t.start()
failed = 0
for _ in range(int(sys.argv[2])):
    child = subprocess.run(["/bin/true"], preexec_fn=os.getppid, close_fds=True, capture_output=True)
    failed += child.returncode != 0
stop = True
print(os.environ.get("GRPC_ENABLE_FORK_SUPPORT"), failed)
"""


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_children_forked_while_grpc_calls_run_exec_every_time(etcd_member: EtcdMember, tmp_path: Path) -> None:
    env = clean_env()
    env.pop("GRPC_ENABLE_FORK_SUPPORT", None)
    script = tmp_path / "forks.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), etcd_member.client_url, "250"], capture_output=True,
                       text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr
    setting, failed = r.stdout.split()
    assert setting == "false" and int(failed) == 0, r.stderr[-2000:]
