"""Fixtures of the end-to-end tests: a whole cluster (three etcd members, agents, a coordinator)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.etcd import EtcdCluster
from tests.helpers.restore_rig import RestoreRig

KEYS = 40


def seed(cluster: EtcdCluster) -> None:
    """A recognisable data set: KEYS keys under /registry/demo/, written through every member."""
    for i in range(KEYS):
        cluster.members[i % 3].put(f"/registry/demo/k{i:03d}", f"value-{i}")


@contextlib.contextmanager
def running_rig(cluster: EtcdCluster, tmp_path: Path, **options: Any) -> Iterator[RestoreRig]:
    """The cluster seeded and a RestoreRig(**options) started around it; its logs on failure, stopped after."""
    seed(cluster)
    r = RestoreRig(cluster, tmp_path, **options)
    try:
        r.start()
        yield r
    except BaseException:
        r.dump_logs()
        raise
    finally:
        r.stop()


@pytest.fixture
def rig(etcd_cluster3: EtcdCluster, tmp_path: Path) -> Iterator[RestoreRig]:
    """Three members seeded, an agent each with a stand-in kube-apiserver, one coordinator; logs on failure."""
    with running_rig(etcd_cluster3, tmp_path, apiservers=True) as r:
        yield r
