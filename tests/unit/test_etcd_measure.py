"""The agent's measurement of etcd (agent/control/status.py): status first, the alarm list only under a
leader and as the proof of quorum, and a last answer never sent as current once it is old.

``measure`` takes the etcd client as its port: here a scripted one that
answers, or fails as a deadline does, call by call and records what it was
asked, with which deadline. The same measurement against real etcd is in
tests/integration/test_control_channel.py and tests/e2e/test_quorum_status.py.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.agent.control.status import QUORUM_DEADLINE, STATUS_DEADLINE, measure, reported
from etcdguard.common.base.errors import EtcdUnavailable
from etcdguard.common.etcd.client import EtcdStatus, MemberInfo
from etcdguard.common.wire.report import EtcdHealth

TIMEOUT = EtcdUnavailable("etcd at http://127.0.0.1:2379 did not answer: DEADLINE_EXCEEDED: Deadline Exceeded")


def status(leader: int, errors: tuple[str, ...] = ()) -> EtcdStatus:
    return EtcdStatus(endpoint="http://127.0.0.1:2379", version="3.5.30", db_size=24576, leader=leader,
                      member_id=0xA1, cluster_id=0xCC, revision=41, raft_term=2, raft_index=9, errors=errors,
                      raft_applied_index=9, db_size_in_use=16384)


class ScriptedEtcd:
    """The three calls of a measurement, each answering its scripted value or raising it."""

    def __init__(self, status: Any, members: Any = (), alarms: Any = ()) -> None:
        self.script = {"status": status, "members": members, "alarms": alarms}
        self.asked: list[tuple[str, Optional[float]]] = []

    def _answer(self, call: str, timeout: Optional[float]) -> Any:
        self.asked.append((call, timeout))
        value = self.script[call]
        if isinstance(value, Exception):
            raise value
        return value

    def status(self, timeout: Optional[float] = None) -> EtcdStatus:
        return self._answer("status", timeout)   # type: ignore[no-any-return]

    def members(self, timeout: Optional[float] = None) -> list[MemberInfo]:
        return list(self._answer("members", timeout))

    def alarms(self, timeout: Optional[float] = None) -> list[str]:
        return list(self._answer("alarms", timeout))


MEMBERS = [MemberInfo(0xA1, "m1", ("http://m1:2380",), ("http://m1:2379",))]


def test_healthy_means_a_leader_and_an_answered_raft_request() -> None:
    etcd = ScriptedEtcd(status(leader=0xB2), MEMBERS, [])
    h = measure(etcd)   # type: ignore[arg-type]
    assert etcd.asked == [("status", STATUS_DEADLINE), ("members", STATUS_DEADLINE), ("alarms", QUORUM_DEADLINE)]
    assert h.healthy and h.quorum is True and h.error is None
    assert (h.leader, h.is_leader, h.revision, h.member_id, h.cluster_id) == ("b2", False, 41, "a1", "cc")
    assert (h.raft_applied_index, h.db_size_in_use) == (9, 16384)
    assert [m.name for m in h.members] == ["m1"]
    assert h.age == 0.0 and h.measured_at is not None and h.measured_at.endswith("Z")


def test_without_a_leader_the_raft_request_is_not_even_asked() -> None:
    etcd = ScriptedEtcd(status(leader=0, errors=("etcdserver: no leader",)), MEMBERS, TIMEOUT)
    h = measure(etcd)   # type: ignore[arg-type]
    assert [call for call, _ in etcd.asked] == ["status", "members"]
    assert not h.healthy and h.quorum is False and h.leader is None
    assert h.error == "etcdserver: no leader" and h.revision == 41


def test_a_leader_without_an_answer_to_the_raft_request_is_no_quorum() -> None:
    etcd = ScriptedEtcd(status(leader=0xB2), MEMBERS, TIMEOUT)
    h = measure(etcd, deadline=0.3, quorum_deadline=0.2)   # type: ignore[arg-type]
    assert etcd.asked == [("status", 0.3), ("members", 0.3), ("alarms", 0.2)]
    assert not h.healthy and h.quorum is False and h.leader == "b2"
    assert h.error is not None and h.error.startswith("no quorum: a raft request (the alarm list) got no answer "
                                                      "within 0.2s")


def test_an_etcd_that_does_not_answer_its_status_is_asked_nothing_more() -> None:
    etcd = ScriptedEtcd(TIMEOUT)
    h = measure(etcd)   # type: ignore[arg-type]
    assert [call for call, _ in etcd.asked] == ["status"]
    assert not h.healthy and h.version is None and h.quorum is None and h.error == str(TIMEOUT)
    assert h.measured_at is not None


def test_alarms_raised_keep_quorum_but_not_health() -> None:
    h = measure(ScriptedEtcd(status(leader=0xA1), MEMBERS, ["a1:NOSPACE"]))   # type: ignore[arg-type]
    assert not h.healthy and h.quorum is True and h.is_leader and h.alarms == ("a1:NOSPACE",)
    assert h.error == "a1:NOSPACE"


HEALTHY = EtcdHealth(healthy=True, version="3.5.30", revision=41, member_id="a1", cluster_id="cc", leader="b2",
                     db_size=24576, age=0.0, measured_at="2026-12-07T01:00:00Z", quorum=True, raft_applied_index=9)


def test_a_recent_measurement_is_sent_as_it_is_with_its_age() -> None:
    assert reported(HEALTHY, 4.9, 0.6, "http://e:2379") == EtcdHealth(**{**HEALTHY.__dict__, "age": 4.9})


def test_an_old_measurement_is_sent_as_not_measured_now() -> None:
    h = reported(HEALTHY, 58.2, 0.6, "http://e:2379")
    assert h.stale and not h.healthy and not h.current()
    assert (h.leader, h.is_leader, h.revision, h.quorum, h.db_size, h.raft_applied_index) == (None, False, None,
                                                                                              None, None, None)
    assert (h.member_id, h.cluster_id, h.version) == ("a1", "cc", "3.5.30")      # who it is, not how it is
    assert (h.age, h.measured_at) == (58.2, "2026-12-07T01:00:00Z")
    assert h.error == ("not measured now (etcd at http://e:2379 has not answered for 0.6s); "
                       "last seen healthy 58s ago")


def test_an_old_failure_says_what_it_was() -> None:
    down = EtcdHealth(error="etcd at http://e:2379 did not answer: UNAVAILABLE", measured_at="2026-12-07T01:00:00Z")
    h = reported(down, 12.0, 7.5, "http://e:2379")
    assert h.stale and h.error == ("not measured now (etcd at http://e:2379 has not answered for 7.5s); last "
                                   "measured 12s ago: etcd at http://e:2379 did not answer: UNAVAILABLE")


def test_no_measurement_yet() -> None:
    h = reported(None, 0.0, 0.6, "http://e:2379")
    assert h.stale and not h.healthy and h.error == "not measured yet: etcd at http://e:2379 has not answered for 0.6s"
