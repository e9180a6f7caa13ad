"""ClusterAgents.step re-sends a slow step under one request id, so the agent's reply to the running
step (which carries that id) is taken as soon as it comes, not a slice later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import pytest
from etcdguard.coordinator.agents.client import AgentUnreachable
from etcdguard.coordinator.restore import agents as ra
from etcdguard.coordinator.restore.agents import ClusterAgents


class SlowStep:
    """restore.step times out ``slow`` times (the step still runs), then answers; ping always answers."""

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self.step_ids: list[Optional[str]] = []

    def call(self, op: str, args: Optional[Mapping[str, Any]] = None, *, timeout: float = 10.0,
             retries: Optional[int] = None, data: Optional[bytes] = None,
             request_id: Optional[str] = None) -> dict[str, Any]:
        if op == "ping":
            return {}
        assert op == "restore.step" and args is not None and args["step"] == "prepare"
        self.step_ids.append(request_id)
        if len(self.step_ids) <= self.slow:
            raise AgentUnreachable("no answer within the slice")
        return {"prepared": "/data/.etcdguard-op/data/member"}

    def close(self) -> None:
        pass


class Links:
    def __init__(self, link: SlowStep) -> None:
        self.link = link

    def dedicated(self, name: str) -> SlowStep:
        return self.link


def test_a_slow_step_is_re_sent_under_the_same_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ra, "SLICE", 0.01)
    link = SlowStep(slow=3)
    agents = ClusterAgents(Links(link), ("m1",))   # type: ignore[arg-type]
    result = agents.step("m1", "op1", "prepare", {"snapshot": "s.db"}, bound=30)
    assert result == {"prepared": "/data/.etcdguard-op/data/member"}
    assert len(link.step_ids) == 4
    assert link.step_ids[0] and len(set(link.step_ids)) == 1


def test_each_step_has_its_own_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    link = SlowStep(slow=0)
    agents = ClusterAgents(Links(link), ("m1",))   # type: ignore[arg-type]
    agents.step("m1", "op1", "prepare", None, bound=30)
    agents.step("m1", "op1", "prepare", None, bound=30)
    assert len(set(link.step_ids)) == 2
