"""Which data dir an etcd command line names, read as etcd reads it (issue 9 item 10's identity proof)."""

from __future__ import annotations

from typing import Optional

import pytest
from etcdguard.agent.runtime.proof import named_data_dir


@pytest.mark.parametrize(("argv", "cwd", "env", "expected"), [
    (["etcd", "--data-dir=/var/lib/etcd"], None, None, "/var/lib/etcd"),
    (["/usr/bin/etcd", "-data-dir", "/var/lib/etcd/"], None, None, "/var/lib/etcd"),
    (["etcd", "--data-dir", "data"], "/srv/m1", None, "/srv/m1/data"),
    (["etcd", "--data-dir", "data"], None, None, None),
    (["etcd", "--name", "m1"], None, "/var/lib/etcd-env", "/var/lib/etcd-env"),
    (["etcd", "--name", "m1"], None, None, None),
    (["etcd", "---data-dir=/x"], None, None, None),                 # etcd itself would not start
    (["etcd", "--data-dir=/a", "--data-dir=/b"], None, None, "/b"),  # the last one wins, as in Go's flag
])
def test_named_data_dir(argv: list[str], cwd: Optional[str], env: Optional[str], expected: Optional[str]) -> None:
    assert named_data_dir(argv, cwd, env) == expected
