"""What the steps that change etcd's membership share: the member list read through an agent, and one
converging loop that acts only when the list says it still has to.

MemberAdd is not idempotent (a resent add fails: the peer URL is taken) and a
reply can be lost (an agent restarted, a leader election), so every
membership step reads the member list first and acts only if it does not
already show the step's effect; after an error it reads the list again. The
calls go through a healthy member other than the one being replaced, the
leader first (membership changes are the leader's to apply). Pure parts
(``initial_cluster_of``, ``find``, ``catch_up_gap``) are unit-tested alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import StepFailed
from etcdguard.common.wire.report import ClusterMember, EtcdHealth
from etcdguard.common.wire.typed import from_json

RETRY_PAUSE = 0.3
SAY_EVERY = 3.0
ADMIN_BOUND = 15.0   # one administrative call; the step's own bound limits the retries
CATCH_UP_SLACK = 1000   # raft entries a joining member may trail the leader by and count as caught up

Members = tuple[ClusterMember, ...]


def members_of(reply: Mapping[str, Any], where: str) -> Members:
    """The member list in an ``etcd.admin`` reply, typed; ValueError naming the field otherwise."""
    raw = reply.get("members")
    if not isinstance(raw, list):
        raise ValueError(f"{where}: the reply has no member list")
    return tuple(from_json(ClusterMember, m, f"{where}.members") for m in raw)


def find(members: Members, *, name: Optional[str] = None, peer_url: Optional[str] = None,
         member_id: Optional[str] = None) -> Optional[ClusterMember]:
    """The member with this id, else this peer URL, else this name (pure)."""
    for m in members:
        if member_id is not None and m.id == member_id:
            return m
    for m in members:
        if peer_url is not None and peer_url in m.peer_urls:
            return m
    for m in members:
        if name is not None and m.name == name:
            return m
    return None


def initial_cluster_of(members: Members, joining: str, joining_peer_url: str) -> str:
    """``--initial-cluster`` for a member joining ``members`` (pure): every member as name=peer URL, the
    joining one (not started yet, so etcd lists it without a name) by its name."""
    entries = []
    for m in members:
        name = m.name or (joining if joining_peer_url in m.peer_urls else "")
        if not name or not m.peer_urls:
            raise ValueError(f"member {m.id} has no name and is not {joining}: another member was added and "
                             "never started; remove it first")
        for url in m.peer_urls:
            entries.append(f"{name}={url}")
    return ",".join(entries)


def catch_up_gap(joining: EtcdHealth, leader: EtcdHealth) -> Optional[int]:
    """Raft entries the joining member still has to apply to reach the leader's index (pure); None when
    either did not say."""
    applied = joining.raft_applied_index or joining.raft_index
    if applied is None or leader.raft_index is None:
        return None
    return max(0, leader.raft_index - applied)


def helpers(run: ClusterRun, exclude: str) -> list[str]:
    """Members (not ``exclude``) whose etcd answers with a leader now, the leader first."""
    seen = run.inspect_all([n for n in run.names if n != exclude])
    alive = [(n, h) for n, (h, _) in seen.items() if h.leader and h.version]
    return [n for n, _ in sorted(alive, key=lambda item: (not item[1].is_leader, item[0]))]


def converge(run: ClusterRun, phase: str, *, exclude: str, bound: float,
             done: Callable[[Members], Optional[dict[str, Any]]],
             act: Callable[[str, Members], dict[str, Any]]) -> dict[str, Any]:
    """Until ``done(member list)`` says the change is there (its result), calling ``act(helper, list)``
    when it is not; through healthy members other than ``exclude``, retrying errors within ``bound``."""
    deadline = time.monotonic() + bound
    last, said = "no member other than " + exclude + " answers with a leader", 0.0
    while True:
        for via in helpers(run, exclude):
            try:
                members = members_of(run.etcd_admin(via, "member-list", {}, ADMIN_BOUND), f"{via}: member-list")
                result = done(members)
                if result is not None:
                    return result
                act(via, members)
                members = members_of(run.etcd_admin(via, "member-list", {}, ADMIN_BOUND), f"{via}: member-list")
                result = done(members)
                if result is not None:
                    return result
                last = f"{via}: the member list does not show the change yet"
            except (EtcdguardError, ValueError) as exc:
                last = f"{via}: {exc}"
            break
        now = time.monotonic()
        if now >= deadline:
            raise StepFailed(phase, f"{phase} did not take effect within {bound:.0f}s: {last}")
        if now - said >= SAY_EVERY:
            said = now
            run.say(phase, f"retrying: {last}")
        run.pause(RETRY_PAUSE)


def others_problem(health: Mapping[str, EtcdHealth], exclude: str) -> Optional[str]:
    """Why the members other than ``exclude`` are not all healthy under one leader (pure); None when they are."""
    sick = [f"{n}: {h.error or 'no leader'}" for n, h in sorted(health.items()) if n != exclude and not h.healthy]
    if sick:
        return "; ".join(sick)
    leaders = {h.leader for n, h in health.items() if n != exclude}
    if len(leaders) != 1:
        return f"the members name different leaders ({', '.join(sorted(str(x) for x in leaders))})"
    return None


def quorum_after_removal(members: Members, target: Optional[ClusterMember], healthy: Sequence[str]
                         ) -> Optional[str]:
    """Why removing ``target`` would leave the voters without a healthy majority (pure); None when it is safe.
    ``healthy``: names of the members measured healthy now."""
    voters = [m for m in members if not m.is_learner and (target is None or m.id != target.id)]
    need = len(voters) // 2 + 1
    up = [m.name for m in voters if m.name in healthy]
    if len(up) < need:
        return (f"without it {len(voters)} voter(s) remain and only {len(up)} of them ({', '.join(up) or 'none'}) "
                f"are healthy; a quorum needs {need}")
    return None
