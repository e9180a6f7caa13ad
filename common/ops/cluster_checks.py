"""Cluster-level checks the steps make across members: quorum, and what a restored cluster must be.

``quorum_problem`` and ``verify_problems`` are pure over the members' health;
``wait_quorum`` polls every member through the ClusterRun port until the
cluster has quorum under one leader, or says who is not there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Optional

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import StepFailed
from etcdguard.common.wire.report import EtcdHealth

NOT_RUNNING = "etcd is not running"
POLL = 0.05      # between polls of every member while waiting for quorum: each is a few ms of etcd.inspect
GONE_FOR = 5.0   # seconds a member's etcd may stay not running after a start before the wait gives up
SHOW_EVERY = 2.0


def quorum_problem(health: Mapping[str, EtcdHealth]) -> Optional[str]:
    """None when every member is healthy and all name the same leader among them; else why not (pure)."""
    sick = [f"{n}: {h.error or 'no leader'}" for n, h in health.items() if not h.healthy]
    if sick:
        return "not healthy: " + "; ".join(sick)
    leaders = {h.leader for h in health.values()}
    ids = {h.member_id for h in health.values()}
    if len(leaders) != 1 or not leaders <= ids:
        return f"members name different leaders ({', '.join(sorted(str(x) for x in leaders))})"
    return None


def wait_quorum(run: ClusterRun, phase: str, timeout: float,
                members: Optional[Sequence[str]] = None) -> dict[str, EtcdHealth]:
    """Until every member (of ``members``: a rollback without the ones left out) is healthy under one
    leader; StepFailed naming who is not after ``timeout``, at once when a member's etcd stays not running
    (it exited: waiting longer cannot help), or when ``members`` are no majority of the cluster."""
    names = tuple(members) if members is not None else run.names
    if len(names) * 2 <= len(run.names):
        raise StepFailed(phase, f"only {', '.join(names) or 'no member'} of {len(run.names)} could be put back: "
                                "no majority, so the cluster cannot have quorum until the others are back")
    deadline = time.monotonic() + timeout
    shown = 0.0
    gone_since: dict[str, float] = {}
    while True:
        health = {n: h for n, (h, _) in run.inspect_all(names).items()}
        problem = quorum_problem(health)
        if problem is None:
            return health
        now = time.monotonic()
        for name, h in health.items():
            if (h.error or "").startswith(NOT_RUNNING):
                gone_since.setdefault(name, now)
            else:
                gone_since.pop(name, None)
        dead = sorted(n for n, t in gone_since.items() if now - t >= GONE_FOR)
        if dead:
            raise StepFailed(phase, f"etcd on {', '.join(dead)} exited and stayed down for {GONE_FOR:g}s "
                                    f"(see its log there): {problem}")
        if now >= deadline:
            raise StepFailed(phase, f"the cluster did not come up within {timeout:.0f}s: {problem}")
        if now - shown >= SHOW_EVERY:
            shown = now
            run.say(phase, f"waiting for quorum: {problem}")
        run.pause(POLL)


def verify_problems(plan: RestorePlan, health: Mapping[str, EtcdHealth], hashes: Mapping[str, Optional[int]],
                    old_cluster_id: Optional[str]) -> list[str]:
    """Every way the restored cluster differs from what the plan promised (pure)."""
    problems = []
    problem = quorum_problem(health)
    if problem:
        problems.append(problem)
    ids = {h.cluster_id for h in health.values()}
    if len(ids) != 1:
        problems.append(f"members report different cluster ids: {', '.join(sorted(str(i) for i in ids))}")
    elif old_cluster_id and ids == {old_cluster_id}:
        problems.append(f"the cluster id is still the old one ({old_cluster_id}): this is not the restored cluster")
    want = sorted((m.member, m.peer_url) for m in plan.members)
    for name, h in health.items():
        problems += _member_problems(plan, name, h, want)
    missing = [n for n, v in hashes.items() if v is None]
    if missing:
        problems.append(f"no hashkv from {', '.join(missing)}")
    elif len(set(hashes.values())) != 1:
        problems.append("hashkv differs between members: "
                        + ", ".join(f"{n}={v}" for n, v in sorted(hashes.items())))
    return problems


def _member_problems(plan: RestorePlan, name: str, h: EtcdHealth, want: list[tuple[str, str]]) -> list[str]:
    problems = []
    have = sorted((m.name, m.peer_urls[0] if m.peer_urls else "") for m in h.members)
    if have != want:
        problems.append(f"{name}: member list {have} differs from the plan's {want}")
    learners = [m.name for m in h.members if m.is_learner]
    if learners:
        problems.append(f"{name}: learners in the member list: {', '.join(learners)}")
    if h.alarms:
        problems.append(f"{name}: alarms raised: {', '.join(h.alarms)}")
    if h.revision is None or h.revision < plan.expected_min_revision:
        problems.append(f"{name}: revision {h.revision} is below the expected {plan.expected_min_revision}")
    return problems
