"""Fixtures of the end-to-end tests: a whole cluster (three etcd members, agents, a coordinator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster
from tests.helpers.restore_rig import RestoreRig

KEYS = 40


def seed(cluster: EtcdCluster) -> None:
    """A recognisable data set: KEYS keys under /registry/demo/, written through every member."""
    for i in range(KEYS):
        cluster.members[i % 3].put(f"/registry/demo/k{i:03d}", f"value-{i}")


@pytest.fixture
def rig(etcd_cluster3: EtcdCluster, tmp_path: Path) -> Iterator[RestoreRig]:
    """Three members seeded, an agent each with a stand-in kube-apiserver, one coordinator; logs on failure."""
    seed(etcd_cluster3)
    r = RestoreRig(etcd_cluster3, tmp_path, apiservers=True)
    try:
        r.start()
        yield r
    except BaseException:
        r.dump_logs()
        raise
    finally:
        r.stop()
