"""The phases of a cluster restore, each an execute paired with its revert (TaskFlow's tasks).

A phase acts on every member in parallel (``RunContext.each``: one thread per
member, each member's step journaled as started before it is sent and as done
or failed after, then a barrier) and may check the cluster as a whole after
that (the fence's still revision, the start's quorum, verify's agreement).
``revert`` undoes what ``execute`` did on every member whose step started,
again in parallel, so a rollback is never member by member: a cluster needs
a quorum of old data at once to come back.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops import phases as ph
from etcdguard.common.wire.report import EtcdHealth
from etcdguard.coordinator.restore.agents import NOT_RUNNING, ClusterAgents, Interrupted
from etcdguard.coordinator.restore.journal import DONE, FAILED, STARTED, Journal, OperationRecord, StepStatus
from etcdguard.coordinator.restore.plan import RestorePlan

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any]], None]
POLL = 0.05     # between polls of every member while waiting for quorum: each is a few ms of etcd.inspect


class PhaseFailed(EtcdguardError):
    """A phase failed on one or more members (or its cluster check failed); the message says where."""

    def __init__(self, phase: str, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.phase = phase
        self.exit_code = exit_code


@dataclass(frozen=True)
class Timeouts:
    step: float = 300.0           # one ordinary step on one member (stop, swap, start, ...)
    prepare: float = 3600.0       # the restore tool on a large snapshot, while etcd still serves
    stage: float = 3600.0         # one upload (it resumes after a lost connection)
    agent_down: float = 60.0      # an agent that stops answering mid-operation gets this long to come back


@dataclass
class RunContext:
    plan: RestorePlan
    journal: Journal
    record: OperationRecord
    agents: ClusterAgents
    emit: Emit
    snapshot_file: Callable[[], AbstractContextManager[Path]]
    safety_snapshot: Callable[[Emit], Optional[str]]
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def op(self) -> str:
        return self.plan.op

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.member for m in self.plan.members)

    def fact(self, key: str, value: Any) -> None:
        self.journal.append("fact", key=key, value=value)
        self.record.facts[key] = value

    def say(self, phase: str, message: str, member: Optional[str] = None, **extra: Any) -> None:
        event = {"phase": phase, "message": message, **extra}
        if member is not None:
            event["member"] = member
        self.emit(event)

    def each(self, phase: str, action: Callable[[str], dict[str, Any]], *, revert: bool = False,
             members: Optional[Sequence[str]] = None) -> dict[str, dict[str, Any]]:
        """Run ``action(member)`` on every member in parallel; journal each; barrier; raise on any failure."""
        steps = self.record.revert_steps if revert else self.record.steps
        event = "revert-step" if revert else "step"
        todo = [m for m in (members if members is not None else self.names)]
        results: dict[str, dict[str, Any]] = {}
        for m in list(todo):
            done = steps.get((phase, m))
            if done is not None and done.status == DONE:
                results[m] = done.result if isinstance(done.result, dict) else {}
                todo.remove(m)

        def one(member: str) -> dict[str, Any]:
            self.journal.append(event, phase=phase, member=member, status=STARTED)
            steps[(phase, member)] = StepStatus(STARTED, at=time.time())
            try:
                result = action(member)
            except Interrupted:
                raise
            except (EtcdguardError, OSError) as exc:
                self.journal.append(event, phase=phase, member=member, status=FAILED, error=str(exc))
                steps[(phase, member)] = StepStatus(FAILED, error=str(exc), at=time.time())
                raise
            self.journal.append(event, phase=phase, member=member, status=DONE, result=result)
            steps[(phase, member)] = StepStatus(DONE, result, at=time.time())
            return result

        errors: list[str] = []
        interrupted: Optional[Interrupted] = None
        if todo:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix=phase) as pool:
                futures = {m: pool.submit(one, m) for m in todo}
                for m, f in futures.items():
                    try:
                        results[m] = f.result()
                    except Interrupted as exc:
                        interrupted = exc
                    except (EtcdguardError, OSError) as exc:
                        errors.append(f"{m}: {exc}")
        if interrupted is not None:
            raise interrupted
        if errors:
            verb = "undoing " if revert else ""
            raise PhaseFailed(phase, f"{verb}{phase} failed on {len(errors)} of {len(self.names)} member(s): "
                                     + "; ".join(errors))
        return results

    def started(self, phase: str) -> list[str]:
        """Members whose step of ``phase`` was sent (it may have acted on them)."""
        return [m for m in self.names if (phase, m) in self.record.steps]


class Phase:
    name = ""
    revertible = True

    def execute(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def revert(self, ctx: RunContext) -> None:
        """Undo ``execute`` on every member where it started; nothing by default."""


class AgentStep(Phase):
    """A phase that is the agent step of the same name on every member, undone by its undo step."""

    undoable = True

    def params(self, ctx: RunContext, member: str) -> Optional[dict[str, Any]]:
        return None

    def bound(self, ctx: RunContext) -> float:
        return ctx.timeouts.step

    def execute(self, ctx: RunContext) -> None:
        def act(member: str) -> dict[str, Any]:
            ctx.say(self.name, "running", member)
            result = ctx.agents.step(member, ctx.op, self.name, self.params(ctx, member), bound=self.bound(ctx))
            ctx.say(self.name, "done", member)
            return result

        ctx.each(self.name, act)
        self.check(ctx)

    def check(self, ctx: RunContext) -> None:
        """A cluster-level condition after every member did its part."""

    def revert(self, ctx: RunContext) -> None:
        if not self.undoable:
            return
        started = ctx.started(self.name)

        def undo(member: str) -> dict[str, Any]:
            ctx.say(self.name, "undoing", member)
            return ctx.agents.undo(member, ctx.op, ph.undo(self.name), bound=self.bound(ctx)) or {"none": True}

        ctx.each(self.name, undo, revert=True, members=started)
        self.after_revert(ctx)

    def after_revert(self, ctx: RunContext) -> None:
        """A cluster-level condition once every member is undone."""


# ---------------------------------------------------------------------------
# cluster checks (inspect every member, poll with a deadline)


def inspect_all(ctx: RunContext, names: Sequence[str], hashkv_revision: Optional[int] = None
                ) -> dict[str, tuple[EtcdHealth, Optional[dict[str, Any]]]]:
    out: dict[str, tuple[EtcdHealth, Optional[dict[str, Any]]]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {n: pool.submit(ctx.agents.inspect, n, hashkv_revision) for n in names}
        for n, f in futures.items():
            try:
                out[n] = f.result()
            except EtcdguardError as exc:
                out[n] = (EtcdHealth(error=str(exc)), None)
    return out


def quorum_problem(health: dict[str, EtcdHealth]) -> Optional[str]:
    """None when every member is healthy and all name the same leader among them; else why not (pure)."""
    sick = [f"{n}: {h.error or 'no leader'}" for n, h in health.items() if not h.healthy]
    if sick:
        return "not healthy: " + "; ".join(sick)
    leaders = {h.leader for h in health.values()}
    ids = {h.member_id for h in health.values()}
    if len(leaders) != 1 or not leaders <= ids:
        return f"members name different leaders ({', '.join(sorted(str(x) for x in leaders))})"
    return None


GONE_FOR = 5.0   # seconds a member's etcd may stay not running after a start before the wait gives up


def wait_quorum(ctx: RunContext, phase: str, timeout: float) -> dict[str, EtcdHealth]:
    """Until every member is healthy under one leader; PhaseFailed naming who is not after ``timeout``,
    or at once when a member's etcd stays not running (it exited: waiting longer cannot help)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    shown = 0.0
    gone_since: dict[str, float] = {}
    while True:
        health = {n: h for n, (h, _) in inspect_all(ctx, ctx.names).items()}
        problem = quorum_problem(health)
        if problem is None:
            return health
        last = problem
        now = time.monotonic()
        for name, h in health.items():
            if (h.error or "").startswith(NOT_RUNNING):
                gone_since.setdefault(name, now)
            else:
                gone_since.pop(name, None)
        dead = sorted(n for n, t in gone_since.items() if now - t >= GONE_FOR)
        if dead:
            raise PhaseFailed(phase, f"etcd on {', '.join(dead)} exited and stayed down for {GONE_FOR:g}s "
                                     f"(see its log there): {last}")
        if now >= deadline:
            raise PhaseFailed(phase, f"the cluster did not come up within {timeout:.0f}s: {last}")
        if now - shown >= 2.0:
            shown = now
            ctx.say(phase, f"waiting for quorum: {last}")
        if ctx.agents.stop.wait(POLL):
            raise Interrupted("the coordinator is stopping")


def verify_problems(plan: RestorePlan, health: dict[str, EtcdHealth], hashes: dict[str, Optional[int]],
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
    values = {n: v for n, v in hashes.items()}
    if None in values.values():
        missing = [n for n, v in values.items() if v is None]
        problems.append(f"no hashkv from {', '.join(missing)}")
    elif len(set(values.values())) != 1:
        problems.append("hashkv differs between members: "
                        + ", ".join(f"{n}={v}" for n, v in sorted(values.items())))
    return problems


# ---------------------------------------------------------------------------
# the phases


class Preflight(Phase):
    name = ph.PREFLIGHT

    def execute(self, ctx: RunContext) -> None:
        # The plan's checks ran when it was made; here the moment is recorded and the safety net made.
        health = {n: h for n, (h, _) in inspect_all(ctx, ctx.names).items()}
        live = [h for h in health.values() if h.healthy]
        revision = max((h.revision for h in live if h.revision is not None), default=None)
        ids = sorted({h.cluster_id for h in live if h.cluster_id})
        ctx.fact("live_revision", revision)
        ctx.fact("old_cluster_id", ids[0] if len(ids) == 1 else ctx.plan.live_cluster_id)
        if revision is not None and ctx.plan.bump_revision and revision >= ctx.plan.expected_min_revision:
            raise PhaseFailed(self.name, f"the live revision {revision:,} has reached the restored revision "
                                         f"{ctx.plan.expected_min_revision:,}; plan again (a larger bump)", 3)
        if ctx.plan.safety_snapshot and "pre_restore_snapshot" not in ctx.record.facts:
            if not live:
                ctx.say(self.name, "the live cluster does not answer now: no safety snapshot")
            else:
                sha = ctx.safety_snapshot(lambda e: ctx.emit({"phase": self.name, **e}))
                ctx.fact("pre_restore_snapshot", sha)


class Stage(Phase):
    name = ph.STAGE

    def execute(self, ctx: RunContext) -> None:
        size = ctx.plan.snapshot.size

        def send(member: str) -> dict[str, Any]:
            held = ctx.agents.held_snapshot(member, ctx.plan.snapshot.id, size)
            if held is not None:
                ctx.say(self.name, f"holds the snapshot in its own store as {held}: not sent (its prepare "
                                   "verifies that file in full)", member)
                return {"staged": held, "sha256": ctx.plan.snapshot.id, "from_store": True}

            def progress(done: int, total: int) -> None:
                ctx.emit({"phase": self.name, "member": member, "bytes": done, "total": total})

            with ctx.snapshot_file() as path:
                result = ctx.agents.upload(member, path, ctx.op, progress=progress, bound=ctx.timeouts.stage)
            if not result.get("complete") or not result.get("staged"):
                raise PhaseFailed(self.name, f"{member}: the upload did not complete: {result}")
            ctx.say(self.name, f"staged {format_bytes(size)}, sha256 verified by the agent", member)
            return {"staged": result["staged"], "sha256": ctx.plan.snapshot.id}

        ctx.each(self.name, send)

    def revert(self, ctx: RunContext) -> None:
        remove_staged(ctx, ctx.started(self.name))


def remove_staged(ctx: RunContext, members: Sequence[str]) -> None:
    """Best effort: a staged copy that stays behind only costs disk, and the agent drops it at its next start."""
    for member in members:
        try:
            ctx.agents.abort_upload(member, ctx.op)
        except EtcdguardError as exc:
            log.warning("member %s: could not remove the staged snapshot %s: %s", member, ctx.op, exc)


class Prepare(AgentStep):
    name = ph.PREPARE

    def bound(self, ctx: RunContext) -> float:
        return ctx.timeouts.prepare

    def params(self, ctx: RunContext, member: str) -> Optional[dict[str, Any]]:
        staged = ctx.record.steps.get((ph.STAGE, member))
        name = staged.result.get("staged") if staged is not None and isinstance(staged.result, dict) else None
        if not name:
            raise PhaseFailed(self.name, f"{member}: no staged snapshot recorded for this member")
        m = ctx.plan.member(member)
        return {"snapshot": name, "name": member, "initial_cluster": ctx.plan.initial_cluster,
                "token": ctx.plan.token, "peer_url": m.peer_url, "bump_revision": ctx.plan.bump_revision}


class Fence(AgentStep):
    name = ph.FENCE

    def check(self, ctx: RunContext) -> None:
        """With every kube-apiserver down the revision must stand still: else something else writes."""
        first = inspect_all(ctx, ctx.names)
        alive = {n: h for n, (h, _) in first.items() if h.healthy and h.revision is not None}
        if not alive:
            ctx.say(self.name, "etcd does not answer: no writer can be checked for")
            return
        if ctx.agents.stop.wait(ctx.plan.fence_settle):
            raise Interrupted("the coordinator is stopping")
        second = inspect_all(ctx, list(alive))
        moved = [f"{n}: {alive[n].revision} -> {h.revision}" for n, (h, _) in second.items()
                 if h.revision is not None and h.revision != alive[n].revision]
        if moved:
            raise PhaseFailed(self.name, "the revision still moves with every kube-apiserver stopped ("
                                         + "; ".join(moved) + "): another client writes to etcd. Stop it, "
                                         "then restore again")
        revision = max(h.revision for h in alive.values() if h.revision is not None)
        ctx.fact("fenced_revision", revision)
        if ctx.plan.bump_revision and revision >= ctx.plan.expected_min_revision:
            raise PhaseFailed(self.name, f"the live revision {revision:,} has reached the restored revision "
                                         f"{ctx.plan.expected_min_revision:,}; plan again with a larger bump")


class Stop(AgentStep):
    name = ph.STOP

    def after_revert(self, ctx: RunContext) -> None:
        ctx.say(self.name, "waiting for the old cluster to have quorum again")
        wait_quorum(ctx, self.name, ctx.plan.start_timeout)


class Swap(AgentStep):
    name = ph.SWAP

    def execute(self, ctx: RunContext) -> None:
        super().execute(ctx)
        kept = {m: (ctx.record.steps[(self.name, m)].result or {}).get("kept") for m in ctx.names}
        ctx.fact("kept", kept)


class Start(AgentStep):
    name = ph.START

    def check(self, ctx: RunContext) -> None:
        health = wait_quorum(ctx, self.name, ctx.plan.start_timeout)
        ids = sorted({h.cluster_id for h in health.values() if h.cluster_id})
        ctx.fact("new_cluster_id", ids[0] if len(ids) == 1 else None)


class Verify(AgentStep):
    name = ph.VERIFY
    undoable = False

    def execute(self, ctx: RunContext) -> None:
        health = {n: h for n, (h, _) in inspect_all(ctx, ctx.names).items()}
        revisions = [h.revision for h in health.values() if h.revision is not None]
        at = min(revisions) if revisions else 0
        hashes: dict[str, Optional[int]] = {}
        if at:
            for n, (_, hk) in inspect_all(ctx, ctx.names, hashkv_revision=at).items():
                hashes[n] = int(hk["hash"]) if hk and isinstance(hk.get("hash"), int) else None
        else:
            hashes = {n: None for n in ctx.names}
        problems = verify_problems(ctx.plan, health, hashes, ctx.record.facts.get("old_cluster_id"))
        if problems:
            raise PhaseFailed(self.name, "the restored cluster does not verify: " + "; ".join(problems))
        ctx.fact("verified", {"revision": at, "hashkv": next(iter(hashes.values()), None),
                              "cluster_id": next(iter(health.values())).cluster_id})
        ctx.say(self.name, f"all {len(health)} members healthy, one leader, hashkv {next(iter(hashes.values()))} "
                           f"at revision {at:,} everywhere")
        super().execute(ctx)   # each agent records it, so unfence may follow there


class Unfence(AgentStep):
    name = ph.UNFENCE
    undoable = False


class RestartControllers(AgentStep):
    name = ph.RESTART
    undoable = False


PHASES: tuple[Phase, ...] = (Preflight(), Stage(), Prepare(), Fence(), Stop(), Swap(), Start(), Verify(),
                             Unfence(), RestartControllers())
assert tuple(p.name for p in PHASES) == ph.CLUSTER_PHASES


def phase(name: str) -> Phase:
    for p in PHASES:
        if p.name == name:
            return p
    raise KeyError(name)
