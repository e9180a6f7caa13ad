"""The cluster restore inside the coordinator daemon: plan, run, resume, roll back, attach, clean up.

The operation runs in a thread the daemon owns, so an operator's lost ssh
session does not abandon a half-done restore: ``etcdguardctl`` only starts it
and follows its progress, and ``restore --attach OP`` follows it again from
anywhere. One operation at a time: a new one is refused (exit 3) while any
journal holds an open operation (running, paused, interrupted or needing
attention). At daemon start, operations the journal shows as running are
marked interrupted: nothing runs them any more until the operator resumes
or rolls them back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import EtcdguardError, UnsafeRefusal, UsageError
from etcdguard.common.base.slot import Slot
from etcdguard.common.journal import JournalDamaged, new_op_id
from etcdguard.common.ops.cluster_plan import OVERRIDES, RestorePlan, SnapshotRef, Summary
from etcdguard.common.ops.flows import CLUSTER_RESTORE
from etcdguard.common.ops.ports import Timeouts
from etcdguard.common.ops.states import ACTIVE, FINAL, OPEN, OpState
from etcdguard.common.snapshot.integrity import verify_restorable
from etcdguard.common.wire.protocol import NOT_FOUND, RemoteError
from etcdguard.common.wire.typed import to_json
from etcdguard.coordinator.agents.links import MemberLinks
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.restore.agents import ClusterAgents
from etcdguard.coordinator.restore.journal import ClusterOperation, JournalStore
from etcdguard.coordinator.restore.lineage import Lineage, links_of
from etcdguard.coordinator.restore.orchestrator import Orchestrator, summarize
from etcdguard.coordinator.restore.orphans import adopt, orphans
from etcdguard.coordinator.restore.plan import KIND_FORWARD_ROLLBACK, PlanOptions, build_plan, with_phases
from etcdguard.coordinator.restore.run import RunContext
from etcdguard.coordinator.restore.warm import WarmChoice, WarmState, adopt_in_plan, usable_bump
from etcdguard.coordinator.vault.store import Vault, VaultEntry

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any]], None]
HEARTBEAT = 10.0     # seconds between keep-alive progress lines to a following etcdguardctl


def snapshot_ref(entry: VaultEntry) -> SnapshotRef:
    return SnapshotRef(id=entry.sha256, size=entry.size, revision=entry.revision, member=entry.source_member,
                       created_at=entry.created_at, created_unix=entry.created_unix,
                       etcd_version=entry.etcd_version, cluster_id=entry.cluster_id,
                       revision_exact=entry.revision_exact)


@dataclass
class Run:
    """One operation being executed in this daemon: its progress events, for every follower."""

    op: str
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    summary: Optional[Summary] = None
    error: Optional[BaseException] = None
    cond: threading.Condition = field(default_factory=threading.Condition)
    cancel: threading.Event = field(default_factory=threading.Event)
    on_phase: Callable[[], None] = lambda: None     # the daemon refreshes its systemd STATUS= line

    def emit(self, event: Mapping[str, Any]) -> None:
        with self.cond:
            self.events.append({"op": self.op, "t": round(time.time(), 3), **event})
            self.cond.notify_all()
        if event.get("message") in ("started", "reverting"):
            self.on_phase()

    def finish(self, summary: Optional[Summary], error: Optional[BaseException]) -> None:
        with self.cond:
            self.summary, self.error, self.done = summary, error, True
            self.cond.notify_all()

    def follow(self, emit: Emit) -> Summary:
        """Forward every event (past ones first) to ``emit`` until the operation ends; its summary."""
        seen = 0
        while True:
            with self.cond:
                if seen >= len(self.events) and not self.done:
                    self.cond.wait(HEARTBEAT)
                batch, seen = self.events[seen:], len(self.events)
                finished = self.done and seen >= len(self.events)
            for event in batch:
                emit(event)
            if not batch and not finished:
                emit({"op": self.op, "message": "still working", "heartbeat": True})
            if finished:
                if self.summary is None:
                    raise self.error if isinstance(self.error, EtcdguardError) else EtcdguardError(
                        f"restore {self.op} stopped with an internal error: {self.error!r} (see the daemon's log)")
                return self.summary


class RestoreService:
    """What the daemon's `restore` and `restores` commands do."""

    def __init__(self, *, config: Callable[[], CoordinatorConfig], links: Callable[[], MemberLinks],
                 vault: Callable[[], Vault], safety_snapshot: Callable[[str, Emit], Optional[str]],
                 slot: Slot, on_change: Callable[[], None] = lambda: None,
                 stop: Optional[threading.Event] = None) -> None:
        self._config = config
        self._links = links
        self._vault = vault
        self._safety_snapshot = safety_snapshot
        self._slot = slot
        self._on_change = on_change
        self.stop = stop or threading.Event()
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._verified: dict[tuple[str, int, float], Optional[str]] = {}

    @property
    def journals(self) -> JournalStore:
        return JournalStore(self._config().coordinator.state_dir)

    # -- daemon start ------------------------------------------------------
    def recover(self) -> list[str]:
        """Mark operations that were running when the daemon stopped as interrupted; return them."""
        interrupted = []
        for operation in self.journals.all():
            if operation.state in ACTIVE:
                operation.log.set_state(OpState.INTERRUPTED, why="the coordinator restarted while it ran")
                interrupted.append(operation.op)
                log.warning("restore %s was interrupted (in %s); resume it with `etcdguardctl restore --resume %s` "
                            "or roll it back with `--rollback %s`", operation.op,
                            (operation.reached() or ["?"])[-1], operation.op, operation.op)
        for op, problem in self.journals.damaged():
            log.error("restore journal %s cannot be read: %s", op, problem)
        return interrupted

    # -- reading -----------------------------------------------------------
    def records(self) -> list[ClusterOperation]:
        return self.journals.all()

    def open_operations(self) -> list[str]:
        """Operations that block a new restore: running, waiting for the operator, or unreadable
        (a damaged journal may be a restore that ran half-way)."""
        with self._lock:
            running = [op for op, run in self._runs.items() if not run.done]
        records, damaged = self.journals.read_all()
        return sorted(set(running) | {r.op for r in records if r.state in OPEN} | {op for op, _ in damaged})

    def active(self) -> Optional[tuple[str, str]]:
        """(op, what it does now) of the operation running in this daemon, if any."""
        with self._lock:
            runs = [r for r in self._runs.values() if not r.done]
        if not runs:
            return None
        run = runs[0]
        with run.cond:
            last = run.events[-1] if run.events else {}
        phase = last.get("phase", "starting")
        return run.op, f"{phase}: {last.get('message', '')}".strip(": ")

    # -- planning ------------------------------------------------------------
    def _verify_vault_copy(self, entry: VaultEntry) -> Optional[str]:
        """None if the vault file is the restorable etcd snapshot it was recorded as (sha256, size, the
        SHA-256 trailer and bbolt's meta pages; a compressed file by what it decompresses to); else the
        problem. Cached per file and mtime. An object
        store's or an encrypted copy: against the fingerprint the coordinator recorded, else in full once
        (Vault.verify_copy)."""
        if not entry.path or entry.encrypted:
            return self._vault().verify_copy(entry)
        try:
            st = Path(entry.path).stat()
        except OSError as exc:
            return f"{entry.path}: {exc.strerror or exc}"
        key = (entry.sha256, st.st_size, st.st_mtime)
        if key not in self._verified:
            try:
                if entry.compression:   # checked as what it decompresses to
                    with self._vault().materialize(entry) as path:
                        verify_restorable(path, entry.sha256, entry.size)
                else:
                    verify_restorable(Path(entry.path), entry.sha256, entry.size)
                self._verified[key] = None
            except EtcdguardError as exc:
                self._verified[key] = str(exc)
        return self._verified[key]

    def plan(self, ref: str, *, force: bool = False, overrides: tuple[str, ...] = (), op: Optional[str] = None,
             kind: str = "restore", rollback_of: Optional[str] = None, bump: Optional[int] = None) -> RestorePlan:
        entry = self._vault().resolve(ref)
        return self.plan_snapshot(snapshot_ref(entry), self._verify_vault_copy(entry), force=force,
                                  overrides=overrides, op=op, kind=kind, rollback_of=rollback_of, bump=bump)

    def plan_snapshot(self, snapshot: SnapshotRef, vault_problem: Optional[str], *, force: bool = False,
                      overrides: tuple[str, ...] = (), op: Optional[str] = None, kind: str = "restore",
                      rollback_of: Optional[str] = None, bump: Optional[int] = None) -> RestorePlan:
        """The plan of restoring ``snapshot`` (a vault entry's, or one a point-in-time restore will build)."""
        config = self._config()
        views = self._links().survey(config.coordinator.request_timeout)
        r = config.restore
        warm = WarmState(config.coordinator.state_dir).read() if r.warm_standby and bump is None else None
        options = PlanOptions(force=force, bump_revision=r.bump_revision if bump is None else bump,
                              safety_snapshot=r.safety_snapshot, start_timeout=r.start_timeout,
                              fence_settle=r.fence_settle, kind=kind, rollback_of=rollback_of, overrides=overrides,
                              bump_at_least=usable_bump(warm, snapshot.id))
        operations = self.journals.all()
        plan = build_plan(views, config.members, snapshot, options, op=op or new_op_id(),
                          created_at=iso_utc(time.time()), vault_problem=vault_problem,
                          open_operations=self.open_operations(),
                          lineage=[*self.lineage.links(), *links_of(operations)],
                          known_operations=self.journals.ids())
        return self._with_warm(plan, warm) if warm is not None else plan

    def _with_warm(self, plan: RestorePlan, choice: WarmChoice) -> RestorePlan:
        """The plan with the warm standby token where the members hold this snapshot restored ahead with its
        parameters (coordinator/restore/warm.py); unchanged otherwise."""
        if choice.sha256 != plan.restored.id:
            return plan
        agents = ClusterAgents(self._links(), tuple(m.member for m in plan.members), stop=self.stop)
        listings: dict[str, dict[str, Any]] = {}
        try:
            for m in plan.members:
                with contextlib.suppress(EtcdguardError):
                    listings[m.member] = agents.client(m.member).call("snapshot.list", {}, timeout=5.0)
        finally:
            agents.close()
        return with_phases(adopt_in_plan(plan, choice, listings))

    @property
    def lineage(self) -> Lineage:
        return Lineage(self._config().coordinator.state_dir)

    def _plan_for(self, args: Mapping[str, Any]) -> RestorePlan:
        """The plan an etcdguardctl request asks for: its snapshot and the overrides it gives."""
        given = args.get("overrides") or []
        if not isinstance(given, list) or any(o not in OVERRIDES for o in given):
            raise UsageError(f"restore: 'overrides' must name some of {', '.join(OVERRIDES)}")
        return self.plan(_text(args, "snapshot"), force=bool(args.get("force")), overrides=tuple(given))

    # -- the control command ---------------------------------------------------
    def command(self, args: Mapping[str, Any], emit: Emit) -> Any:
        mode = args.get("mode")
        if mode == "plan":
            return self._plan_for(args).to_json()
        if mode == "run":
            return self.run(args, emit)
        if mode in ("resume", "rollback", "attach", "cleanup", "cancel"):
            op = _text(args, "op")
            if mode == "resume":
                return to_json(self.resume(op, emit))
            if mode == "rollback":
                return self.rollback(op, emit, yes=bool(args.get("yes")))
            if mode == "attach":
                return to_json(self.attach(op, emit))
            if mode == "cancel":
                return self.cancel(op, emit)
            return self.cleanup(op, yes=bool(args.get("yes")))
        raise UsageError(f"restore: unknown mode {mode!r} (plan, run, resume, rollback, attach, cleanup, cancel)")

    def _refuse_open(self) -> None:
        open_ops = self.open_operations()
        if open_ops:
            damaged = {op for op, _ in self.journals.damaged()}
            raise UnsafeRefusal("refused: " + "; ".join(
                f"restore {op}'s journal cannot be read (it may have run half-way): look at "
                f"{self.journals.path(op)}, then move its directory out of {self.journals.root}"
                if op in damaged else f"restore operation {op} is not finished; resume it, roll it back or "
                f"wait for it (etcdguardctl restores)" for op in open_ops))

    def run(self, args: Mapping[str, Any], emit: Emit) -> dict[str, Any]:
        self._refuse_open()
        plan = self._plan_for(args)
        wanted = args.get("plan_id")
        if wanted is not None and wanted != plan.plan_id:
            raise UnsafeRefusal(f"refused: plan {wanted} is not the plan for the cluster as it is now "
                                f"({plan.plan_id}); something changed since it was reviewed. Look at the new plan: "
                                f"etcdguardctl restore {plan.restored.id[:12]} --plan")
        until = args.get("until")
        if until is not None and until not in CLUSTER_RESTORE.names:
            raise UsageError(f"--until {until!r}: not a phase ({', '.join(CLUSTER_RESTORE.names)})")
        return _json(self._launch_new(plan, emit, until=until))

    def launch(self, plan: RestorePlan, emit: Emit, until: Optional[str] = None) -> Summary:
        """Run a new operation of any flow from its plan (refused while another one is open or running) and
        follow it to its end."""
        self._refuse_open()
        return self._launch_new(plan, emit, until=until)

    def _launch_new(self, plan: RestorePlan, emit: Emit, until: Optional[str] = None) -> Summary:
        if plan.blocking:
            reasons = "\n".join(f"  - {(r.member + ': ') if r.member else ''}{r.message}" for r in plan.blocking)
            raise UnsafeRefusal(f"restore refused, nothing was changed:\n{reasons}")
        with self._lock:
            if any(not r.done for r in self._runs.values()):
                raise UnsafeRefusal("refused: another restore operation is running in this coordinator")
            operation = self.journals.create(plan, until=until)
            if plan.warm:
                WarmState(self._config().coordinator.state_dir).consumed(plan.token, plan.op)
            emit({"op": plan.op, "phase": "plan", "message": f"operation {plan.op} (plan {plan.plan_id}) started"})
            run = self._start(operation, "run")
        return run.follow(emit)

    def resume(self, op: str, emit: Emit) -> Summary:
        try:
            operation = self.journals.open(op)
        except JournalDamaged as exc:
            raise UnsafeRefusal(f"restore {op} cannot be resumed: {exc}. Roll it back from what can be read "
                                f"with `etcdguardctl restore --rollback {op}`, or look at "
                                f"{self.journals.path(op)} and move its directory out of {self.journals.root}"
                                ) from None
        state = operation.state
        if state not in (OpState.INTERRUPTED, OpState.PAUSED, OpState.NEEDS_ATTENTION):
            raise UsageError(f"restore {op} is {state.value}; only an interrupted, paused or needs-attention "
                             "operation can be resumed")
        failed = operation.record.failed_phase
        if state is OpState.NEEDS_ATTENTION and failed and operation.flow.has(failed) \
                and not operation.flow.step(failed).clients_see:
            raise UnsafeRefusal(f"restore {op}: its rollback failed ({operation.record.error}); fix that, then "
                                f"`etcdguardctl restore --rollback {op}` finishes it")
        with self._lock:
            self._refuse_if_running(op)
            run = self._start(operation, "resume")
        return run.follow(emit)

    def orphans(self) -> dict[str, list[str]]:
        """Operations open on some agent that this coordinator has no journal of -> members holding them."""
        config = self._config()
        return orphans(self._links().survey(config.coordinator.request_timeout), self.journals.ids())

    def _adopt(self, op: str) -> ClusterOperation:
        """Take over an operation only the agents know (its journal lost with an earlier coordinator)."""
        config = self._config()
        members = tuple(m.name for m in config.members)
        agents = ClusterAgents(self._links(), members, stop=self.stop)
        statuses: dict[str, dict[str, Any]] = {}
        try:
            for m in members:
                try:
                    statuses[m] = agents.client(m).call("restore.status", {"op_id": op}, timeout=10.0)
                except RemoteError as exc:
                    if exc.code != NOT_FOUND:
                        raise
        finally:
            agents.close()
        if not statuses:
            raise UsageError(f"no restore operation {op!r}: neither this coordinator nor any agent knows it "
                             "(see `etcdguardctl restores`)")
        log.warning("restore %s: no journal here; taking it over from the records of %s", op, ", ".join(statuses))
        return adopt(self.journals, op, statuses, config.members)

    def rollback(self, op: str, emit: Emit, yes: bool = False) -> dict[str, Any]:
        try:
            operation = self.journals.open(op)
        except UsageError:
            operation = self._adopt(op)
        except JournalDamaged as exc:
            log.warning("restore %s: its journal is damaged (%s); rolling back from what can be read", op, exc)
            operation = self.journals.salvage(op)
        if operation.state is OpState.DONE or not operation.flow.rollback_possible(operation.reached()):
            return self._forward_rollback(operation, emit, yes)
        if operation.state not in (OpState.INTERRUPTED, OpState.PAUSED, OpState.NEEDS_ATTENTION,
                                   OpState.ROLLING_BACK, OpState.RUNNING):
            raise UsageError(f"restore {op} is {operation.state.value}: nothing to roll back")
        with self._lock:
            self._refuse_if_running(op)
            if operation.state is OpState.RUNNING:
                # Running in no daemon (it was, when this coordinator died): it is interrupted.
                operation.log.set_state(OpState.INTERRUPTED, why="found running with no coordinator running it")
            run = self._start(operation, "rollback")
        return _json(run.follow(emit))

    def cancel(self, op: str, emit: Emit) -> dict[str, Any]:
        """Stop a running restore at its next step boundary and roll it back while that is still safe."""
        with self._lock:
            run = self._runs.get(op)
        if run is None or run.done:
            raise UsageError(f"restore {op} is not running in this coordinator (see `etcdguardctl restores`); "
                             f"an interrupted or paused one is rolled back with `--rollback {op}`")
        run.cancel.set()
        emit({"op": op, "phase": "cancel", "message": "cancel requested: the restore stops at its next step "
                                                       "boundary and rolls back if no client has seen its data"})
        return _json(run.follow(emit))

    def _forward_rollback(self, operation: ClusterOperation, emit: Emit, yes: bool) -> dict[str, Any]:
        """After unfence: a new restore of the pre-restore snapshot, bumped above the current revision."""
        sha = operation.record.facts.get("pre_restore_snapshot")
        if not sha:
            raise UnsafeRefusal(f"restore {operation.op} reached unfence and has no pre-restore snapshot (the "
                                "cluster did not answer before it); there is nothing to roll back to")
        plan = self.plan(str(sha), kind=KIND_FORWARD_ROLLBACK, rollback_of=operation.op, force=True)
        if not yes:
            return {"plan": plan.to_json(), "needs_yes": True}
        return _json(self._launch_new(plan, emit))

    def attach(self, op: str, emit: Emit) -> Summary:
        with self._lock:
            run = self._runs.get(op)
        if run is not None:
            return run.follow(emit)
        return summarize(self.journals.open(op))

    def cleanup(self, op: str, yes: bool) -> dict[str, Any]:
        """List (or with ``yes`` delete) the data an ended operation kept on each member."""
        operation = self.journals.open(op)
        if operation.state not in FINAL:
            raise UnsafeRefusal(f"restore {op} is {operation.state.value}; clean up only an operation that ended")
        members = tuple(m.member for m in operation.plan.members)
        agents = ClusterAgents(self._links(), members, stop=self.stop)
        out: dict[str, Any] = {"op": op, "members": {}}
        try:
            for m in members:
                try:
                    if yes:
                        result = agents.undo(m, op, "cleanup", bound=600.0)
                        out["members"][m] = {"removed": (result or {}).get("removed", [])}
                    else:
                        status = agents.client(m).call("restore.status", {"op_id": op}, timeout=10.0)
                        out["members"][m] = {"kept": status.get("kept", [])}
                except EtcdguardError as exc:
                    out["members"][m] = {"error": str(exc)}
        finally:
            agents.close()
        out["deleted"] = yes
        return out

    # -- running -------------------------------------------------------------
    def _timeouts(self) -> Timeouts:
        r = self._config().restore
        return Timeouts(step=r.step_timeout, prepare=r.prepare_timeout, stage=r.prepare_timeout,
                        agent_down=r.agent_down)

    def _refuse_if_running(self, op: str) -> None:
        if any(not r.done for r in self._runs.values()):
            busy = next(r.op for r in self._runs.values() if not r.done)
            raise UnsafeRefusal(f"refused: restore {busy} is running in this coordinator; follow it with "
                                f"`etcdguardctl restore --attach {busy}`")

    def _start(self, operation: ClusterOperation, how: str) -> Run:
        run = Run(operation.op, on_phase=self._on_change)
        self._runs[operation.op] = run
        thread = threading.Thread(target=self._execute, args=(operation, run, how), name=f"restore-{operation.op}",
                                  daemon=True)
        thread.start()
        return run

    def _execute(self, operation: ClusterOperation, run: Run, how: str) -> None:
        summary: Optional[Summary] = None
        error: Optional[BaseException] = None
        timeouts = self._timeouts()
        plan = operation.plan
        agents = ClusterAgents(self._links(), tuple(m.member for m in plan.members), stop=self.stop,
                               agent_down=timeouts.agent_down)
        try:
            with self._hold_slot(run), self.journals.exclusive():
                ctx = RunContext(operation, agents, run.emit, snapshot_file=lambda: self._snapshot_file(plan),
                                 safety_snapshot=lambda emit: self._safety_snapshot(operation.op, emit),
                                 timeouts=timeouts, cancel=run.cancel)
                orchestrator = Orchestrator(ctx)
                self._on_change()
                summary = orchestrator.rollback() if how == "rollback" else orchestrator.run()
                if operation.state is OpState.DONE:
                    self.lineage.record(operation)
        except BaseException as exc:
            error = exc
            if not isinstance(exc, EtcdguardError):
                log.exception("restore %s: internal error", operation.op)
            with contextlib.suppress(EtcdguardError, ValueError):
                if operation.state in ACTIVE:
                    operation.log.set_state(OpState.INTERRUPTED, why=f"stopped by an error: {exc}")
        finally:
            agents.close()
            run.finish(summary, error)
            self._on_change()

    @contextlib.contextmanager
    def _hold_slot(self, run: Run) -> Iterator[None]:
        """The daemon's single slot: no vault pull or backup overlaps a restore."""
        def waiting(doing: str) -> None:
            run.emit({"phase": "plan", "message": f"waiting for the running vault pull or backup to finish ({doing})"})

        with self._slot.held(f"restore {run.op}", waiting=waiting):
            yield

    @contextlib.contextmanager
    def _snapshot_file(self, plan: RestorePlan) -> Iterator[Path]:
        vault = self._vault()
        entry = vault.has(plan.restored.id)
        if entry is None:
            raise UsageError(f"snapshot {plan.restored.id[:12]} is no longer in the vault")
        with vault.materialize(entry) as path:
            yield path


def _json(summary: Summary) -> dict[str, Any]:
    data: dict[str, Any] = to_json(summary)
    return data


def _text(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"restore: {key!r} must be given")
    return value
