"""The diagnosis: one verdict from the cluster's facts, with its evidence and the one command that fixes it.

Pure: ``diagnose(facts)`` runs every named check over the typed facts
(facts.py) and returns each problem found, the most severe first; the
verdict is the most severe problem (or healthy), and its class is the exit
code of ``etcdguardctl diagnose`` (docs/operations.md). The classes, most
severe first:

==  ====================  =================================================================
10  quorum-lost           no majority of the voters is in quorum: a restore
11  alarm                 a NOSPACE or CORRUPT alarm is raised
12  member-lost           one member is down or its data is lost, the others keep quorum
13  learner-stuck         a learner is not catching up (or was added and never started)
14  member-behind         a voting member's raft log is far behind the leader's
15  certificate-expiring  a certificate expires within 30 days (or is unreadable)
16  backups-stale         the vault's newest snapshot is old, or pulls keep failing
17  fragmented            a database is far larger than its in-use size, or than the others'
18  config-drift          etcd's member list and the coordinator's [[members]] differ
19  unknown               a member cannot be judged (its agent does not answer)
==  ====================  =================================================================

0 is healthy; 1, 2 and 3 keep their meaning across etcdguard (the diagnosis
itself failed, usage, refused).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.ops.membership import CATCH_UP_SLACK
from etcdguard.common.wire.typed import to_json as typed_json
from etcdguard.coordinator.agents.quorum import MemberState, QuorumState
from etcdguard.coordinator.diagnose.facts import ClusterFacts, MemberSeen, OperationSeen
from etcdguard.coordinator.members.drift import drift

DAY = 86400.0
CERT_WARN = 30 * DAY
BEHIND_ENTRIES = 10_000              # raft entries a voter may trail the leader before it counts as behind
FRAG_MIN_BYTES = 64 * 1024 * 1024    # below this a database is never "fragmented"
FRAG_FREE_RATIO = 0.5                # more than half of the file free
FRAG_LARGER = 2.0                    # or more than twice the smallest other member's database
STALE_INTERVALS = 2.0
FAILING_PULLS = 3


class Kind(enum.Enum):
    HEALTHY = ("healthy", 0)
    QUORUM_LOST = ("quorum-lost", 10)
    ALARM = ("alarm", 11)
    MEMBER_LOST = ("member-lost", 12)
    LEARNER_STUCK = ("learner-stuck", 13)
    MEMBER_BEHIND = ("member-behind", 14)
    CERTIFICATE_EXPIRING = ("certificate-expiring", 15)
    BACKUPS_STALE = ("backups-stale", 16)
    FRAGMENTED = ("fragmented", 17)
    CONFIG_DRIFT = ("config-drift", 18)
    UNKNOWN = ("unknown", 19)

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def exit_code(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class Problem:
    kind: Kind
    summary: str
    command: str
    evidence: tuple[str, ...] = ()
    member: Optional[str] = None


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    summary: str
    command: Optional[str]
    problems: tuple[Problem, ...]
    evidence: tuple[str, ...]          # every member as it was seen, the quorum, the vault

    @property
    def exit_code(self) -> int:
        return self.kind.exit_code


Check = Callable[[ClusterFacts], list[Problem]]


def _days(seconds: float) -> str:
    return f"{seconds / DAY:.1f} days" if abs(seconds) >= DAY else format_duration(abs(seconds))


def member_line(m: MemberSeen) -> str:
    """One member as seen now, for the evidence (pure)."""
    e = m.etcd
    if not m.reachable:
        return f"{m.name}: its agent at {m.agent} does not answer ({m.agent_error or 'no report'})"
    if e.version is None:
        disk = (f"its database ({format_bytes(m.db_on_disk)}) is on disk" if m.db_on_disk
                else "no database on its disk (its data is gone)")
        return f"{m.name}: etcd does not answer ({e.error or 'down'}); {disk}"
    role = "leader" if e.is_leader else ("learner" if e.is_learner else "follower")
    parts = [f"{m.name}: {m.state.value} {role}", f"revision {e.revision:,}" if e.revision is not None else "",
             f"raft index {e.raft_applied_index or e.raft_index:,}" if (e.raft_applied_index or e.raft_index) else "",
             f"db {format_bytes(e.db_size)}" + (f" (in use {format_bytes(e.db_size_in_use)})"
                                                if e.db_size_in_use is not None else "") if e.db_size else ""]
    if e.alarms:
        parts.append(f"alarms {', '.join(e.alarms)}")
    if e.error and m.state is not MemberState.HEALTHY:
        parts.append(e.error)
    return ", ".join(p for p in parts if p)


def _operation_for(facts: ClusterFacts, member: str) -> Optional[OperationSeen]:
    return next((o for o in facts.operations if o.flow == "replace" and o.target == member), None)


def quorum_lost(facts: ClusterFacts) -> list[Problem]:
    q = facts.quorum
    if q.state is not QuorumState.LOST:
        return []
    holding = [m for m in facts.members if m.etcd.revision is not None]
    on_disk = [m for m in facts.members if m.etcd.revision is None and m.db_on_disk]
    evidence = [f"{m.name} holds data at revision {m.etcd.revision:,} (etcd answers, {m.state.value})"
                for m in sorted(holding, key=lambda m: -(m.etcd.revision or 0))]
    evidence += [f"{m.name}: etcd down, its database ({format_bytes(m.db_on_disk or 0)}) is on disk: starting etcd "
                 "there may bring quorum back without a restore" for m in on_disk]
    lost = [m.name for m in facts.members if m.etcd.revision is None and not m.db_on_disk and m.reachable]
    if lost:
        evidence.append(f"no data left on {', '.join(lost)}")
    v = facts.vault
    if v.newest_sha256:
        evidence.append(f"newest vault snapshot {v.newest_sha256[:12]}: revision {v.newest_revision:,}, "
                        f"{format_duration(v.newest_age or 0)} old")
        command = f"etcdguardctl restore {v.newest_sha256[:12]} --plan"
    else:
        evidence.append("the vault holds no snapshot")
        command = "etcdguardctl restore latest --plan"
    return [Problem(Kind.QUORUM_LOST, q.sentence, command, tuple(evidence))]


def alarms(facts: ClusterFacts) -> list[Problem]:
    names = {m.etcd.member_id: m.name for m in facts.members if m.etcd.member_id}
    raised = sorted({a for m in facts.members for a in m.etcd.alarms})
    out = []
    for alarm in raised:
        member_id, _, kind = alarm.partition(":")
        name = names.get(member_id, member_id)
        if kind == "CORRUPT":
            out.append(Problem(Kind.ALARM, f"a CORRUPT alarm is raised on {name}: its data differs from the others'",
                               f"etcdguardctl replace {name} --plan", (alarm,), name))
        else:
            m = facts.member(name)
            size = f"; its database is {format_bytes(m.etcd.db_size)}" if m and m.etcd.db_size else ""
            out.append(Problem(Kind.ALARM, f"a {kind} alarm is raised on {name}: the cluster takes no writes{size}",
                               "etcdguardctl defrag --plan   (delete or compact data first if the space is really "
                               "in use)", (alarm,), name))
    return out


def member_lost(facts: ClusterFacts) -> list[Problem]:
    if facts.quorum.state is not QuorumState.HELD:
        return []
    out = []
    for m in facts.members:
        if m.state not in (MemberState.DOWN, MemberState.NO_LEADER) or m.etcd.is_learner:
            continue
        op = _operation_for(facts, m.name)
        what = ("its data is lost" if not m.db_on_disk and m.etcd.version is None else "its etcd is down"
                if m.etcd.version is None else "its etcd has no leader")
        healthy = ", ".join(facts.quorum.healthy) or "the others"
        if op is not None:
            command = f"etcdguardctl replace --{'attach' if op.running else 'resume'} {op.op}"
            summary = f"{m.name} is being replaced (operation {op.op}, {op.state}); {healthy} keep quorum"
        else:
            command = f"etcdguardctl replace {m.name} --plan"
            summary = f"{m.name} is lost ({what}) while {healthy} keep quorum: replace it, nothing is restored"
        out.append(Problem(Kind.MEMBER_LOST, summary, command, (member_line(m),), m.name))
    return out


def learners(facts: ClusterFacts) -> list[Problem]:
    leader = facts.leader
    listed = leader.etcd.members if leader is not None else ()
    out = []
    for entry in listed:
        if not entry.is_learner:
            continue
        name = entry.name or next((m.name for m in facts.members if m.peer_url in entry.peer_urls), entry.id)
        seen = facts.member(name)
        op = _operation_for(facts, name)
        if op is not None and op.running:
            continue
        gap = None
        if seen is not None and leader is not None and leader.etcd.raft_index is not None:
            applied = seen.etcd.raft_applied_index or seen.etcd.raft_index
            gap = None if applied is None else leader.etcd.raft_index - applied
        if entry.name and gap is not None and gap <= CATCH_UP_SLACK and op is None:
            why = "caught up but never promoted"
        elif not entry.name:
            why = "added but never started"
        else:
            why = f"{gap:,} raft entries behind the leader" if gap is not None else "its progress is unknown"
        command = (f"etcdguardctl replace --resume {op.op}" if op is not None
                   else f"etcdguardctl replace {name} --plan")
        out.append(Problem(Kind.LEARNER_STUCK, f"learner {name} ({entry.id}) is not catching up: {why}", command,
                           (f"{name}: learner with peer URL {', '.join(entry.peer_urls)}",), name))
    return out


def behind(facts: ClusterFacts) -> list[Problem]:
    leader = facts.leader
    if leader is None or leader.etcd.raft_index is None:
        return []
    out = []
    for m in facts.members:
        applied = m.etcd.raft_applied_index or m.etcd.raft_index
        if m is leader or m.etcd.is_learner or applied is None or m.state is not MemberState.HEALTHY:
            continue
        gap = leader.etcd.raft_index - applied
        if gap > BEHIND_ENTRIES:
            out.append(Problem(Kind.MEMBER_BEHIND, f"{m.name} is {gap:,} raft entries behind the leader "
                                                   f"{leader.name}: a slow disk or network",
                               f"check {m.name}'s disk and network; if it stays behind: etcdguardctl replace "
                               f"{m.name} --plan", (member_line(m), member_line(leader)), m.name))
    return out


_KUBEADM = {"etcd/server.crt": "etcd-server", "etcd/peer.crt": "etcd-peer",
            "etcd/healthcheck-client.crt": "etcd-healthcheck-client", "apiserver-etcd-client.crt":
            "apiserver-etcd-client"}


def renew_command(paths: Sequence[str]) -> str:
    """How to renew these certificates: kubeadm's names where they are kubeadm's files (pure)."""
    names = [next((n for suffix, n in _KUBEADM.items() if p.endswith("/pki/" + suffix)), "") for p in paths]
    if names and all(names):
        return f"kubeadm certs renew {' '.join(sorted(set(names)))}   (then restart etcd and kube-apiserver)"
    return f"renew {', '.join(paths)} with the CA that issued them, then restart etcd (and kube-apiserver)"


def certificates(facts: ClusterFacts) -> list[Problem]:
    out = []
    for m in facts.members:
        soon = [c for c in m.certificates if c.error is None and c.not_after_unix is not None
                and c.not_after_unix - facts.now < CERT_WARN]
        bad = [c for c in m.certificates if c.error is not None]
        if not soon and not bad:
            continue
        evidence = tuple(
            [f"{c.path} ({'/'.join(c.kinds)}): " + (f"expired {_days(facts.now - (c.not_after_unix or 0))} ago"
                                                     if (c.not_after_unix or 0) <= facts.now else
                                                     f"expires in {_days((c.not_after_unix or 0) - facts.now)}")
             + f" ({c.not_after})" for c in soon]
            + [f"{c.path} ({'/'.join(c.kinds)}): {c.error}" for c in bad])
        first = min((c.not_after_unix or 0) - facts.now for c in soon) if soon else None
        summary = (f"{len(soon)} certificate(s) on {m.name} expire within 30 days (the first in {_days(first)})"
                   if first is not None and first > 0 else
                   f"a certificate on {m.name} has expired" if first is not None
                   else f"{len(bad)} certificate file(s) on {m.name} cannot be read")
        out.append(Problem(Kind.CERTIFICATE_EXPIRING, summary, renew_command([c.path for c in soon + bad]),
                           evidence, m.name))
    return out


def backups(facts: ClusterFacts) -> list[Problem]:
    v = facts.vault
    if v.newest_sha256 is None:
        return [Problem(Kind.BACKUPS_STALE, "the vault holds no snapshot: a lost cluster could not be restored",
                        "etcdguardctl backup", (f"vault pulls failed in a row: {v.failures}",))]
    evidence = [f"newest vault snapshot {v.newest_sha256[:12]} is {format_duration(v.newest_age or 0)} old "
                f"(interval {format_duration(v.interval)})"]
    if v.failures >= FAILING_PULLS:
        evidence.append(f"{v.failures} vault pulls failed in a row: {v.last_error or 'see the coordinator log'}")
        return [Problem(Kind.BACKUPS_STALE, f"vault pulls are failing ({v.failures} in a row)", "etcdguardctl backup",
                        tuple(evidence))]
    if v.newest_age is not None and v.newest_age > STALE_INTERVALS * v.interval:
        return [Problem(Kind.BACKUPS_STALE, f"backups are stale: the newest is {format_duration(v.newest_age)} old, "
                                            f"more than {STALE_INTERVALS:g} intervals", "etcdguardctl backup",
                        tuple(evidence))]
    return []


def fragmented(facts: ClusterFacts) -> list[Problem]:
    sized = [m for m in facts.members if m.etcd.db_size]
    out = []
    for m in sized:
        size, in_use = m.etcd.db_size or 0, m.etcd.db_size_in_use
        others = [o.etcd.db_size or 0 for o in sized if o is not m]
        free = size - in_use if in_use is not None else 0
        if size < FRAG_MIN_BYTES:
            continue
        if in_use is not None and free > FRAG_FREE_RATIO * size:
            why = (f"its database is {format_bytes(size)}, of which {format_bytes(in_use)} is in use "
                   f"({free / size:.0%} free)")
        elif others and size > FRAG_LARGER * min(others):
            why = (f"its database is {format_bytes(size)}, more than {FRAG_LARGER:g}x the others' "
                   f"({format_bytes(min(others))})")
        else:
            continue
        out.append(Problem(Kind.FRAGMENTED, f"{m.name} is fragmented: {why}", "etcdguardctl defrag --plan",
                           (member_line(m),), m.name))
    return out


def config_drift(facts: ClusterFacts) -> list[Problem]:
    leader = facts.leader
    if leader is None or not leader.etcd.members:
        return []
    replacing = next((o.target for o in facts.operations if o.flow == "replace" and o.target), None)
    peers = {m.name: m.peer_url for m in facts.members}
    found = drift([m.name for m in facts.members], leader.etcd.members, peers, replacing)
    lost = {p.member for p in member_lost(facts)}
    return [Problem(Kind.CONFIG_DRIFT, f"etcd's member list and the configuration differ: {d.problem}", d.fix,
                    (d.sentence(),), d.member) for d in found if not d.accepted and d.member not in lost]


def unknown(facts: ClusterFacts) -> list[Problem]:
    out = []
    for m in facts.members:
        if m.state in (MemberState.UNREACHABLE, MemberState.NOT_MEASURED):
            out.append(Problem(Kind.UNKNOWN, f"{m.name} cannot be judged: {member_line(m)}",
                               f"check its agent (`systemctl status etcdguard-agent` on its host); if the host is "
                               f"gone: put a new host's agent in [[members]] and `etcdguardctl replace {m.name} "
                               "--peer-url URL --plan`", (member_line(m),), m.name))
    if facts.quorum.state is QuorumState.UNKNOWN and not out:
        out.append(Problem(Kind.UNKNOWN, facts.quorum.sentence, "etcdguardctl status"))
    return out


CHECKS: tuple[Check, ...] = (quorum_lost, alarms, member_lost, learners, behind, certificates, backups, fragmented,
                             config_drift, unknown)


def diagnose(facts: ClusterFacts, checks: Sequence[Check] = CHECKS) -> Verdict:
    """Every problem the checks find, the most severe first, and the verdict they add up to (pure)."""
    problems = sorted((p for check in checks for p in check(facts)), key=lambda p: p.kind.exit_code)
    evidence = [facts.quorum.sentence, *(member_line(m) for m in facts.members)]
    v = facts.vault
    if v.newest_sha256:
        evidence.append(f"vault: newest snapshot {v.newest_sha256[:12]}, revision {v.newest_revision:,}, "
                        f"{format_duration(v.newest_age or 0)} old")
    evidence += [f"operation {o.op} ({o.flow}{' of ' + o.target if o.target else ''}) is {o.state}"
                 for o in facts.operations]
    if not problems:
        leader = facts.leader
        summary = (f"healthy: {len(facts.quorum.healthy)} of {facts.quorum.voters} members healthy"
                   + (f" under leader {leader.name}" if leader else ""))
        return Verdict(Kind.HEALTHY, summary, None, (), tuple(evidence))
    worst = problems[0]
    return Verdict(worst.kind, worst.summary, worst.command, tuple(problems), tuple(evidence))


def to_json(verdict: Verdict, facts: ClusterFacts) -> dict[str, Any]:
    """The verdict and the facts it was drawn from, as ``etcdguardctl diagnose --json`` prints them."""
    return {
        "verdict": verdict.kind.label, "exit": verdict.exit_code, "summary": verdict.summary,
        "command": verdict.command, "evidence": list(verdict.evidence),
        "problems": [{"kind": p.kind.label, "exit": p.kind.exit_code, "member": p.member, "summary": p.summary,
                      "command": p.command, "evidence": list(p.evidence)} for p in verdict.problems],
        "quorum": facts.quorum.to_json(),
        "members": [{"member": m.name, **{k: v for k, v in typed_json(m).items() if k != "name"},
                     "state": m.state.value} for m in facts.members],
        "vault": typed_json(facts.vault),
        "operations": [typed_json(o) for o in facts.operations],
    }
