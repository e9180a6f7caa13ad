"""The plans of the operations on members (replace one, defragment each): pure, plain data.

``build_replace_plan`` and ``build_defrag_plan`` take what the agents report
(typed MemberViews), the configured members and the operator's options, and
return the plan with every reason to refuse (Barman-style named checks): the
flow's steps describe themselves in it, ``--plan`` prints it, ``--yes`` runs
it while its id (a digest of the decisions) is still the reviewed one.
Nothing here talks to anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Callable, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops.cluster_plan import PlannedMember, Refusal, RestorePlan
from etcdguard.common.ops.flows import DEFRAG, REPLACE, Flow
from etcdguard.common.ops.membership import find, quorum_after_removal
from etcdguard.common.wire.report import ClusterMember
from etcdguard.common.wire.typed import to_json
from etcdguard.coordinator.agents.quorum import QuorumState, cluster_quorum, member_state
from etcdguard.coordinator.agents.view import MemberView
from etcdguard.coordinator.config import MemberSettings
from etcdguard.coordinator.members.drift import drift
from etcdguard.coordinator.restore.plan import planned_members
from etcdguard.coordinator.restore.refusals import peer_url

KIND_REPLACE = "replace"
KIND_DEFRAG = "defrag"


@dataclass(frozen=True)
class MemberFacts:
    """What a replace or defrag plan decides from."""

    views: Sequence[MemberView]
    configured: Sequence[MemberSettings]
    target: Optional[str]
    peer_url: Optional[str] = None              # --peer-url: the replacement's peer URL, confirmed
    open_operations: Sequence[str] = ()
    known_operations: frozenset[str] = frozenset()

    def view(self, name: str) -> Optional[MemberView]:
        return next((v for v in self.views if v.name == name), None)

    def others(self) -> list[MemberView]:
        return [v for v in self.views if v.name != self.target]

    def member_list(self) -> tuple[ClusterMember, ...]:
        """etcd's member list as a healthy member other than the target reports it."""
        for v in self.others():
            if v.healthy and v.etcd.members:
                return v.etcd.members
        return ()


Check = Callable[[MemberFacts], Iterator[Refusal]]


def open_operations(f: MemberFacts) -> Iterator[Refusal]:
    for op in f.open_operations:
        yield Refusal("operation", f"operation {op} is not finished; resume it, roll it back or wait for it "
                                   "(etcdguardctl restores)")
    for v in f.views:
        if v.report is not None and v.report.restore.open_ops:
            yield Refusal("operation", f"an operation is open on this node ({', '.join(v.report.restore.open_ops)}); "
                                       "finish or roll it back first", v.name)


def others_healthy(f: MemberFacts) -> Iterator[Refusal]:
    for v in f.others():
        if not v.reachable or v.report is None:
            yield Refusal("quorum", f"its agent at {v.agent} does not answer ({v.error or 'no report'}): its etcd "
                                    f"cannot be proven healthy, so replacing {f.target} could lose quorum", v.name)
        elif not v.healthy:
            yield Refusal("quorum", f"etcd is not healthy ({v.etcd.error or 'not measured now'}): replacing "
                                    f"{f.target} now could lose quorum; fix this member first", v.name)


def quorum_kept(f: MemberFacts) -> Iterator[Refusal]:
    members = f.member_list()
    if not members:
        if any(v.healthy for v in f.others()):
            yield Refusal("quorum", "no healthy member reported etcd's member list")
        return
    target = find(members, name=f.target) if f.target else None
    healthy = [v.name for v in f.others() if v.healthy]
    problem = quorum_after_removal(members, target, healthy)
    if problem is not None:
        yield Refusal("quorum", f"removing {f.target} is not safe: {problem}")
    strays = [m for m in members if (m.is_learner or not m.name) and m is not target
              and not (f.peer_url and f.peer_url in m.peer_urls)]
    if strays:
        yield Refusal("members", "etcd's member list holds a learner or an unstarted member "
                                 f"({', '.join(m.id for m in strays)}); promote or remove it first")


def target_agent(f: MemberFacts) -> Iterator[Refusal]:
    """The replaced member's agent answers and serves it, on the host the replacement joins from."""
    if f.target is None:
        return
    v = f.view(f.target)
    if v is None:
        return
    if not v.reachable or v.report is None:
        yield Refusal("agent", f"the agent at {v.agent} cannot be reached ({v.error or 'no report'}) and no "
                               "replacement host is named: on the new host, install an agent for this member, then "
                               f'point the coordinator\'s [[members]] name = "{f.target}" at it (agent = '
                               f'"tcp://NEW-HOST:7479", public_key = its key), reload (SIGHUP) and run '
                               f"`etcdguardctl replace {f.target} --peer-url https://NEW-HOST:2380 --plan`", f.target)
        return
    if v.report.member.name != f.target:
        yield Refusal("agent", f"the agent at {v.agent} serves etcd member {v.report.member.name!r}, not "
                               f"{f.target!r}; fix [[members]] in the coordinator's config", f.target)
    yield from _peer_url(f, v)


def _peer_url(f: MemberFacts, v: MemberView) -> Iterator[Refusal]:
    joins = peer_url(v)
    if joins is None:
        yield Refusal("agent", "the peer URL this member joins with is unknown; set etcd.peer_url in its agent "
                               "config", v.name)
        return
    if f.peer_url and f.peer_url != joins:
        yield Refusal("agent", f"--peer-url {f.peer_url}, but the agent at {v.agent} runs etcd with peer URL "
                               f"{joins}: set etcd.peer_url (and its start command) there, or give --peer-url "
                               f"{joins}", v.name)
        return
    listed = find(f.member_list(), name=f.target)
    if listed is not None and joins not in listed.peer_urls and not f.peer_url:
        yield Refusal("agent", f"the agent at {v.agent} joins with peer URL {joins}, while etcd lists "
                               f"{', '.join(listed.peer_urls)}: a replacement on a new host; confirm it with "
                               f"--peer-url {joins}", v.name)


REPLACE_CHECKS: tuple[Check, ...] = (open_operations, others_healthy, quorum_kept, target_agent)


def serving(f: MemberFacts) -> Iterator[Refusal]:
    """A defragmentation needs every member answering under one leader (alarms allowed)."""
    for v in f.views:
        if not v.reachable or v.report is None:
            yield Refusal("agent", f"its agent at {v.agent} does not answer ({v.error or 'no report'})", v.name)
        elif not member_state(v).in_quorum:
            yield Refusal("quorum", f"etcd is not serving under a leader ({v.etcd.error or 'not measured now'}); "
                                    "defragment only a healthy cluster", v.name)


DEFRAG_CHECKS: tuple[Check, ...] = (open_operations, serving)


def refusals(facts: MemberFacts, checks: Sequence[Check]) -> list[Refusal]:
    seen: set[tuple[str, str, Optional[str]]] = set()
    out = []
    for check in checks:
        for r in check(facts):
            if (r.check, r.message, r.member) not in seen:
                seen.add((r.check, r.message, r.member))
                out.append(r)
    return out


def _digest(kind: str, members: Sequence[PlannedMember], *, target: Optional[str], peer: str,
            found: Sequence[Refusal], cluster_id: Optional[str]) -> str:
    canonical = json.dumps({"kind": kind, "members": to_json(list(members)), "target": target, "peer_url": peer,
                            "cluster_id": cluster_id,
                            "refusals": sorted(f"{r.check}:{r.member}:{r.message}" for r in found)},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _base(facts: MemberFacts, flow: Flow, kind: str, *, op: str, created_at: str, found: list[Refusal],
          notes: list[str], peer: str = "") -> RestorePlan:
    views = facts.views
    members = tuple(planned_members(views, facts.configured))
    if facts.target and peer:
        members = tuple(replace(m, peer_url=peer) if m.member == facts.target else m for m in members)
    ids = sorted({v.etcd.cluster_id for v in views if v.healthy and v.etcd.cluster_id})
    cluster_id = ids[0] if len(ids) == 1 else None
    revisions = [v.etcd.revision for v in views if v.current and v.etcd.revision is not None]
    quorum = cluster_quorum(views)
    plan_id = _digest(kind, members, target=facts.target, peer=peer, found=found, cluster_id=cluster_id)
    plan = RestorePlan(
        plan_id=plan_id, op=op, kind=kind, snapshot=None,
        members=members, initial_cluster="", token="", bump_revision=0, expected_min_revision=0,
        live_revision=max(revisions) if revisions else None, live_cluster_id=cluster_id, discarded_revisions=None,
        safety_snapshot=False, phases=(), refusals=tuple(found), created_at=created_at, flow=flow.name,
        cluster_down=quorum.state is QuorumState.LOST, quorum=quorum.sentence, target=facts.target,
        target_peer_url=peer, notes=tuple(notes))
    return replace(plan, phases=tuple(step.describe(plan) for step in flow.steps), downtime_phases=flow.downtime)


def build_replace_plan(facts: MemberFacts, *, op: str, created_at: str = "") -> RestorePlan:
    """Every decision of replacing ``facts.target`` while the others keep quorum; no side effects."""
    found = refusals(facts, REPLACE_CHECKS)
    v = facts.view(facts.target or "")
    joins = (peer_url(v) if v is not None else None) or facts.peer_url or ""
    notes = []
    listed = find(facts.member_list(), name=facts.target) if facts.target else None
    if listed is None:
        notes.append(f"{facts.target} is not in etcd's member list (removed earlier): nothing to remove")
    elif joins and joins not in listed.peer_urls:
        notes.append(f"a new host: {facts.target} leaves {', '.join(listed.peer_urls)} and joins from {joins} "
                     f"through the agent at {v.agent if v else '?'}, which [[members]] already names; the "
                     "coordinator's configuration and etcd's member list agree afterwards")
    others = [m.name for m in facts.member_list() if m.name and m.name != facts.target]
    configured_peers = {x.name: (peer_url(x) if x.report is not None else None) for x in facts.views}
    for d in drift([m.name for m in facts.configured], facts.member_list(), configured_peers, facts.target):
        if not d.accepted:
            notes.append(f"configuration: {d.sentence()}")
    notes.append(f"nothing is restored and nothing is lost: {facts.target} syncs every key from "
                 f"{', '.join(others) or 'the others'}; writes go on throughout")
    return _base(facts, REPLACE, KIND_REPLACE, op=op, created_at=created_at, found=found, notes=notes, peer=joins)


def build_defrag_plan(facts: MemberFacts, *, op: str, created_at: str = "") -> RestorePlan:
    """Defragment ``facts.target`` (or every member), followers first and the leader last; no side effects."""
    found = refusals(facts, DEFRAG_CHECKS)
    notes = []
    for v in facts.views:
        e = v.etcd
        if v.current and e.db_size is not None:
            in_use = e.db_size_in_use
            spare = (f", {format_bytes(e.db_size - in_use)} reclaimable ({(e.db_size - in_use) / e.db_size:.0%})"
                     if in_use is not None and e.db_size else "")
            notes.append(f"{v.name}: db {format_bytes(e.db_size)}"
                         + (f", in use {format_bytes(in_use)}" if in_use is not None else "") + spare
                         + (f"; alarms {', '.join(e.alarms)}" if e.alarms else "")
                         + (" (leader: last)" if v.is_leader else ""))
    return _base(facts, DEFRAG, KIND_DEFRAG, op=op, created_at=created_at, found=found, notes=notes)


def render_member_plan(p: RestorePlan) -> str:
    """A replace or defrag plan for a terminal."""
    command = "replace" if p.flow == REPLACE.name else "defrag"
    title = (f"replace member {p.target}, plan {p.plan_id} (operation {p.op})" if command == "replace"
             else f"defragment {p.target or 'every member'}, plan {p.plan_id} (operation {p.op})")
    lines = [title]
    if p.quorum:
        lines.append(f"  {p.quorum}")
    if p.live_revision is not None:
        lines.append(f"  live cluster: revision {p.live_revision:,}"
                     + (f", cluster id {p.live_cluster_id}" if p.live_cluster_id else ""))
    lines.append("  members:")
    for m in p.members:
        lines.append(f"    {m.member:<12} agent {m.agent}  peer {m.peer_url or '?'}  data {m.data_dir or '?'}  "
                     f"({m.runtime or '?'})")
    lines.append("  steps (! = changes a node or the member list; the cluster keeps serving throughout):")
    for i, phase in enumerate(p.phases, 1):
        lines.append(f"   {'!' if phase.destructive else ' '}{i:>2}. {phase.phase:<14} {phase.what}")
        lines.append(f"         on failure: {phase.on_failure}")
    lines += [f"  note: {n}" for n in p.notes]
    if p.refusals:
        lines.append("  REFUSED:")
        lines += [f"    - {(r.member + ': ') if r.member else ''}{r.message}" for r in p.refusals]
    else:
        lines.append("  preflight: no reason to refuse")
    target = f" {p.target}" if command == "replace" else (f" --member {p.target}" if p.target else "")
    peer = f" --peer-url {p.target_peer_url}" if command == "replace" and p.target_peer_url else ""
    lines.append("  nothing has been changed" + ("" if p.blocking else
                                                  f"; run it with: etcdguardctl {command}{target}{peer} --yes "
                                                  f"--plan-id {p.plan_id}"))
    return "\n".join(lines)
