"""The etcd client's administrative calls against a real three-member cluster: a learner added, refused
promotion while it has not synced, removed again; a member defragmented; an alarm disarmed."""

from __future__ import annotations

import pytest
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd.client import EtcdClient

from tests.helpers.etcd import EtcdCluster
from tests.helpers.net import free_server_port, wait_until


def test_member_add_as_learner_promote_refused_then_remove(etcd_cluster3: EtcdCluster) -> None:
    m1 = etcd_cluster3.members[0]
    url = f"http://127.0.0.1:{free_server_port()}"
    with EtcdClient(m1.client_url, timeout=10.0) as client:
        def add() -> object:
            try:
                return client.member_add((url,), learner=True)
            except EtcdUnavailable as exc:   # a fresh cluster: etcd adds members once it is 5 s old
                assert "unhealthy cluster" in str(exc)
                return None
        added, members = wait_until(add, 30, interval=0.2, what="the learner to be added")  # type: ignore[misc]
        assert added.is_learner and added.peer_urls == (url,) and added.name == ""
        assert added.id in {m.id for m in members} and len(members) == 4
        with pytest.raises(EtcdUnavailable, match="learner"):
            client.member_promote(added.id)               # it never started: not in sync with the leader
        left = client.member_remove(added.id)
        assert sorted(m.name for m in left) == ["m1", "m2", "m3"]
        assert sorted(m.name for m in client.members()) == ["m1", "m2", "m3"]


def test_defragment_and_an_alarm_disarmed_that_is_not_raised(etcd_cluster3: EtcdCluster) -> None:
    m2 = etcd_cluster3.members[1]
    with EtcdClient(m2.client_url, timeout=10.0) as client:
        client.defragment(30.0)
        assert client.status().healthy
        assert client.alarm_disarm(client.status().member_id, "NOSPACE") == []
        with pytest.raises(ValueError, match="unknown alarm"):
            client.alarm_disarm(1, "BOGUS")
