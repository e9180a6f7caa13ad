"""Node-local restore: the steps only this node can do, each idempotent and journaled.

Slow work (verify, restore into a new directory) happens while etcd still
runs; downtime is stop -> rename -> start. Old data is renamed aside, never
deleted by a restore. A finished step's result is on disk before the next
step starts, so a re-run (same op id) continues where the last one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.etcd.client import EtcdClient, EtcdStatus
from etcdguard.agent.restore import swap, toolproc
from etcdguard.agent.restore.journal import DAMAGED, OPEN_STATES, DamagedRecord, Operation, OperationStore
from etcdguard.agent.restore.plan import STEPS, PlannedStep, RestoreParams, argv_problems, build_plan
from etcdguard.agent.restore.safety import ClusterFacts, compare_identity, multi_member_refusal, rollback_goes_backwards
from etcdguard.agent.restore.swap import aside_member, prepared_member, restore_target, wal_target, workspace_dir
from etcdguard.agent.runtime.base import NodeRuntime
from etcdguard.agent.runtime.proof import etcd_stopped
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import (
    EtcdguardError,
    EtcdUnavailable,
    SnapshotCorrupt,
    ToolError,
    UnsafeRefusal,
    UsageError,
)
from etcdguard.common.journal import new_op_id
from etcdguard.common.ops import phases as ph
from etcdguard.common.ops.bump import bump_for
from etcdguard.common.snapshot.bbolt import BoltError, BoltMember, cluster_id_of, read_file_members
from etcdguard.common.snapshot.integrity import (
    TRAILER_SIZE,
    Recorded,
    SnapshotCheck,
    read_sidecar,
    sidecar_problems,
    verify_file,
    verify_restorable,
)
from etcdguard.common.snapshot.tools import SnapshotTool, failure_reason, restore_argv

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]   # (step, message)
BEFORE_SWAP = ("preflight", "prepare", "fence", "stop")
SELINUX_XATTR = "security.selinux"
# The restore tool runs while etcd still serves (no downtime), so it may take long on a big
# snapshot; the bound only catches a tool that hangs.
PREPARE_TIMEOUT = 3600.0


class StepFailed(EtcdguardError):
    """A restore step failed; the message says which step, why, and what was undone."""

    def __init__(self, step: str, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code


@dataclass
class Outcome:
    op: str
    ok: bool
    state: str
    steps: list[dict[str, Any]]
    error: Optional[str] = None
    failed_step: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "ok": self.ok, "state": self.state, "steps": self.steps,
                "error": self.error, "failed_step": self.failed_step}


@dataclass(frozen=True)
class LocalChecks:
    """What a node-local restore checked before it starts; any refusal stops it (exit 3)."""

    identity: str                 # safety.Identity value
    checks: list[str]
    refusals: list[str]
    forced: list[str]             # refusals overridden by --force, recorded in the operation

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _noop(step: str, message: str) -> None:
    return None


def _db_members(path: Path, size: int) -> list[BoltMember]:
    """The members bucket of a bbolt file ([] if it cannot be read: this is evidence, not a gate)."""
    if size <= 0:
        return []
    try:
        return read_file_members(path, size)
    except (OSError, BoltError):
        return []


def _labels(members: list[tuple[int, str]]) -> tuple[str, ...]:
    """One label per member: its name, or its id while it has never started (and so has no name)."""
    return tuple(sorted(name or f"unstarted member {mid:x}" for mid, name in members))


def catalog_record(snapshot: Path) -> Optional[Recorded]:
    """The sidecar beside a snapshot file (the catalog's, or a staged upload's), None if there is none.

    An unreadable sidecar is a refusal, not "no sidecar": it may be what
    stands between a replaced file and a restore.
    """
    try:
        return read_sidecar(snapshot)
    except ValueError as exc:
        raise UnsafeRefusal(f"the snapshot's record is unreadable: {exc}; nothing was changed. "
                            "Move it aside if the snapshot is known to be right") from None


def fingerprint(path: Path) -> list[int]:
    """Cheap identity of a file's content: any write, rename over or truncate changes one of these."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class NodeRestorer:
    """Runs restore steps for one member on this node."""

    def __init__(self, config: AgentConfig, member: LocalMember, runtime: NodeRuntime, tool: SnapshotTool,
                 progress: Progress = _noop) -> None:
        self.config = config
        self.member = member
        self.runtime = runtime
        self.tool = tool
        self.ops = OperationStore(config.state.dir)
        self.progress = progress

    # -- planning (no side effects beyond reading) ----------------------------
    def live_status(self) -> Optional[EtcdStatus]:
        try:
            with EtcdClient(self.member.endpoint, self.member.tls, self.config.etcd.dial_timeout) as c:
                return c.status()
        except EtcdguardError:
            return None

    def live_revision(self) -> Optional[int]:
        st = self.live_status()
        return st.revision if st is not None else None

    def inspect_snapshot(self, snapshot: Path, recorded: Optional[Recorded] = None) -> SnapshotCheck:
        """Prove ``snapshot`` restorable (trailer, bbolt, `snapshot status`) and, when it is in a
        catalog, that it is the file the catalog recorded. Nothing else is read before this."""
        check = verify_restorable(snapshot, tool=self.tool)
        if recorded is not None:
            problems = sidecar_problems(recorded, check.digest, check.revision)
            if problems:
                raise UnsafeRefusal(
                    f"{snapshot} is not the snapshot its catalog record {recorded.where} describes: "
                    f"{'; '.join(problems)}. The file was replaced or damaged after it was taken; "
                    "nothing was changed. Restore another snapshot, or move the record aside if this "
                    "file is known to be right")
        return check

    def make_params(self, snapshot: Path, op: Optional[str] = None, *, initial_cluster: Optional[str] = None,
                    token: Optional[str] = None, peer_url: Optional[str] = None,
                    bump_revision: Optional[int] = None, exact_bump: bool = False,
                    recorded: Optional[Recorded] = None) -> RestoreParams:
        """Read the snapshot (verify + revision) and fill in every parameter of the restore.

        Every path recorded is absolute, so a resume restores the same file from
        any working directory. The bump is raised past this member's live
        revision unless ``exact_bump`` (a cluster restore, where every member must
        bump by the same planned amount).
        """
        op = op or new_op_id()
        peer = peer_url or self.member.peer_url
        if not peer:
            raise UsageError("this member's peer URL is unknown: set etcd.peer_url in the agent config")
        snapshot = snapshot.resolve()
        check = self.inspect_snapshot(snapshot, recorded)
        if check.revision is None:
            raise ToolError(f"{self.tool.kind} did not report the revision of {snapshot}")
        live = self.live_status()
        configured = self.config.restore.bump_revision if bump_revision is None else bump_revision
        if not self.tool.supports_bump:
            bump = 0
        elif exact_bump:
            bump = configured
        else:
            bump = bump_for(configured, check.revision, live.revision if live is not None else None)
        cluster = initial_cluster or f"{self.member.name}={peer}"
        tok = token or f"etcdguard-{op}"
        data_dir = Path(os.path.abspath(self.member.data_dir))
        tool = dataclasses.replace(self.tool, path=Path(os.path.abspath(self.tool.path)))
        wal_dir = Path(os.path.abspath(self.member.wal_dir)) if self.member.wal_dir else None
        argv = restore_argv(tool, snapshot, restore_target(data_dir, op), name=self.member.name,
                            initial_cluster=cluster, token=tok, peer_url=peer, bump_revision=bump,
                            wal_dir=wal_target(wal_dir, op) if wal_dir is not None else None)
        return RestoreParams(
            op=op, snapshot=str(snapshot), snapshot_sha256=check.digest.sha256, snapshot_size=check.digest.size,
            snapshot_revision=check.revision, name=self.member.name, peer_url=peer, initial_cluster=cluster,
            token=tok, data_dir=str(data_dir), bump_revision=bump, restore_argv=tuple(argv),
            live_cluster_id=f"{live.cluster_id:x}" if live is not None else "",
            wal_dir=str(wal_dir) if wal_dir is not None else "",
        )

    # -- what only a node-local restore checks -------------------------------
    def local_checks(self, params: RestoreParams, recorded: Optional[Recorded] = None,
                     force: bool = False) -> LocalChecks:
        """The refusals of a node-local restore: another cluster's snapshot (unless ``force``)
        and a multi-member cluster (never forced: it needs the coordinator)."""
        live = self._live_cluster()
        snap = self._snapshot_cluster(Path(params.snapshot), recorded)
        checks: list[str] = []
        refusals: list[str] = []
        forced: list[str] = []
        split = multi_member_refusal(self.member.name, live.member_names if live is not None else None,
                                     self.member.initial_cluster)
        if split is not None:
            refusals.append(split)
        else:
            checks.append(f"single-member cluster ({live.describe() if live is not None else 'etcd did not answer'})")
        verdict = compare_identity(snap, live, self.lineage())
        if verdict.refuses and force:
            forced.append(verdict.sentence)
            checks.append(f"FORCED (--force): {verdict.sentence}")
        elif verdict.refuses:
            refusals.append(verdict.sentence)
        else:
            checks.append(verdict.sentence)
        return LocalChecks(verdict.outcome.value, checks, refusals, forced)

    def _live_cluster(self) -> Optional[ClusterFacts]:
        """The cluster this member serves: etcd's answer, else the members in its data dir's db."""
        try:
            with EtcdClient(self.member.endpoint, self.member.tls, self.config.etcd.dial_timeout) as c:
                st = c.status()
                members = c.members()
            return ClusterFacts((f"{st.cluster_id:x}",), tuple(f"{m.id:x}" for m in members),
                                _labels([(m.id, m.name) for m in members]), "etcd's member list")
        except EtcdguardError:
            pass
        db = Path(self.member.data_dir) / "member" / "snap" / "db"
        found = _db_members(db, db.stat().st_size if db.is_file() else 0)
        if not found:
            return None
        return ClusterFacts((f"{cluster_id_of([m.id for m in found]):x}",), tuple(m.id_hex for m in found),
                            _labels([(m.id, m.name) for m in found]),
                            f"the members recorded in {db} (etcd did not answer)")

    @staticmethod
    def _snapshot_cluster(snapshot: Path, recorded: Optional[Recorded]) -> Optional[ClusterFacts]:
        """Who the snapshot is from: its sidecar's cluster and member, and the members in the file."""
        size = snapshot.stat().st_size - TRAILER_SIZE if snapshot.is_file() else 0
        found = _db_members(snapshot, size)
        cids: list[str] = []
        mids = [m.id_hex for m in found]
        names = sorted(m.name for m in found if m.name)
        where = []
        if recorded is not None and recorded.cluster_id not in ("", "0"):
            cids.append(recorded.cluster_id)
            if recorded.member_id and recorded.member_id not in mids:
                mids.append(recorded.member_id)
            if recorded.member and recorded.member not in names:
                names.append(recorded.member)
            where.append("its catalog record")
        if found:
            computed = f"{cluster_id_of([m.id for m in found]):x}"
            if computed not in cids:
                cids.append(computed)
            where.append("the members recorded in the file")
        if not cids and not mids:
            return None
        return ClusterFacts(tuple(cids), tuple(mids), tuple(names), " and ".join(where))

    def lineage(self) -> dict[str, str]:
        """Cluster ids this node served before or after one of its recorded restores -> that operation."""
        out: dict[str, str] = {}
        for other in self.ops.all():
            with contextlib.suppress(EtcdguardError, OSError, ValueError, KeyError, TypeError, AttributeError):
                before = str(other.record().get("params", {}).get("live_cluster_id") or "")
                if before:
                    out.setdefault(before, other.op)
                verified = other.finished("verify")
                if verified is not None and verified.result.get("cluster_id"):
                    out.setdefault(str(verified.result["cluster_id"]), other.op)
        return out

    def runtime_descriptions(self) -> tuple[str, ...]:
        services = [self.runtime.etcd] + ([self.runtime.apiserver] if self.runtime.apiserver else [])
        return tuple(s.describe() for s in services)

    def plan(self, params: RestoreParams) -> list[PlannedStep]:
        api = self.runtime.apiserver.describe() if self.runtime.apiserver else None
        return build_plan(params, self.runtime.etcd.describe(), api)

    # -- operation bookkeeping ---------------------------------------------
    def open_operation(self, params: RestoreParams, kind: str = "local",
                       checks: Optional[LocalChecks] = None) -> Operation:
        op = self.ops.get(params.op)
        if op.exists():
            recorded = self.params_of(op)
            if recorded.snapshot_sha256 != params.snapshot_sha256:
                raise UnsafeRefusal(f"operation {params.op} was started with a different snapshot "
                                    f"(sha256 {recorded.snapshot_sha256[:16]}...); use a new operation id")
            return op
        for other in self.ops.all():
            theirs = other.record()
            state = theirs.get("state")
            if state == DAMAGED:
                raise UnsafeRefusal(f"refusing to start a restore: {theirs.get('error')}")
            if state in OPEN_STATES:
                raise UnsafeRefusal(f"operation {other.op} on this node is {state}; finish it "
                                    f"(restore --op {other.op} --yes) or roll it back first")
        record: dict[str, Any] = {"kind": kind, "created_at": time.time(), "state": "running",
                                  "params": params.to_json(),
                                  "snapshot_fingerprint": fingerprint(Path(params.snapshot))}
        if checks is not None:
            record["checks"] = checks.to_json()
        op.create(record)
        if checks is not None and checks.forced:
            op.journal("forced", refusals=checks.forced)
        return op

    def reverify(self, op: Operation, full: bool = True) -> list[str]:
        """Before a resumed operation runs any step: is its snapshot still the verified file?

        The recorded command must name the recorded absolute path, and the file
        must have the recorded size and sha256 (``full``), or at least the same
        inode, size and timestamps (otherwise it is hashed again). Once prepared,
        the file is no longer read, so a file that is gone is only noted.
        Raises UnsafeRefusal (nothing is done) on any mismatch.
        """
        p = self.params_of(op)
        prepared = op.finished("prepare") is not None
        undo = (f"Nothing was done. Put the verified file back, or undo the operation with "
                f"`etcdguard-agent rollback {op.op}`")
        if not prepared:
            problems = argv_problems(p)
            if problems:
                raise UnsafeRefusal(f"operation {op.op} cannot be resumed: {'; '.join(problems)}. {undo}")
        path = Path(p.snapshot)
        if not path.is_file():
            if prepared:
                return [f"{path} is gone; its data was already prepared"]
            raise UnsafeRefusal(f"operation {op.op}: its snapshot {path} is gone. {undo}")
        recorded = op.record().get("snapshot_fingerprint")
        if not full and recorded == fingerprint(path):
            return [f"{path} unchanged since it was verified (inode, size, times)"]
        try:
            verify_file(path, p.snapshot_sha256, p.snapshot_size)
        except SnapshotCorrupt as exc:
            raise UnsafeRefusal(f"operation {op.op}: {path} is no longer the snapshot it was started with "
                                f"({exc}). {undo}") from None
        return [f"{path} re-verified: sha256 {p.snapshot_sha256[:16]}..., {p.snapshot_size} bytes"]

    def params_of(self, op: Operation) -> RestoreParams:
        """The operation's recorded parameters; DamagedRecord when they cannot be read back."""
        params = op.load().get("params")
        try:
            return RestoreParams.from_json(params if isinstance(params, dict) else {})
        except (KeyError, TypeError, ValueError) as exc:
            raise DamagedRecord(f"the record of operation {op.op} ({op.dir / 'op.json'}) holds no usable "
                                f"restore parameters ({exc!r})") from None

    # -- the steps -----------------------------------------------------------
    def steps(self) -> dict[str, Callable[..., dict[str, Any]]]:
        """Every step this node runs, with its undo: the one table run_step dispatches on."""
        return {
            ph.PREFLIGHT: self._step_preflight, ph.PREPARE: self._step_prepare, ph.FENCE: self._step_fence,
            ph.STOP: self._step_stop, ph.SWAP: self._step_swap, ph.START: self._step_start,
            ph.VERIFY: self._step_verify, ph.UNFENCE: self._step_unfence, ph.RESTART: self._step_restart,
            ph.undo(ph.PREPARE): self._undo_prepare, ph.undo(ph.FENCE): self._undo_fence,
            ph.undo(ph.STOP): self._undo_stop, ph.undo(ph.SWAP): self._undo_swap,
            ph.undo(ph.START): self._undo_start,
        }

    def run_step(self, op: Operation, step: str, **kwargs: Any) -> dict[str, Any]:
        """Run one step unless already finished; return its (recorded) result."""
        action = self.steps().get(step)
        if action is None:
            raise UsageError(f"unknown restore step {step!r}")
        done = op.finished(step)
        if done is not None:
            self.progress(step, "already done (recorded)")
            return done.result
        p = self.params_of(op)
        op.journal("started", step=step)
        self.progress(step, "running")
        result: dict[str, Any] = action(op, p, **kwargs)
        op.finish(step, result)
        self.progress(step, "done")
        return result

    def _step_preflight(self, op: Operation, p: RestoreParams, just_verified: bool = False) -> dict[str, Any]:
        """``just_verified``: the operation was opened by the same request, after its snapshot was
        verified in full (make_params); the file is hashed again only if it changed since then."""
        if not (just_verified and op.record().get("snapshot_fingerprint") == fingerprint(Path(p.snapshot))):
            verify_file(Path(p.snapshot), p.snapshot_sha256, p.snapshot_size)
        if not Path(p.restore_argv[0]).exists():
            raise ToolError(f"restore tool {p.restore_argv[0]} is gone")
        data_dir = Path(p.data_dir)
        if not data_dir.is_dir():
            raise UnsafeRefusal(f"data dir {data_dir} does not exist; create it (owned as etcd expects) first")
        free = fsutil.free_bytes(data_dir)
        if free < 2 * p.snapshot_size:
            raise UnsafeRefusal(f"not enough free disk on {data_dir}'s filesystem: {free} bytes free, "
                                f"need >= {2 * p.snapshot_size} (2x the snapshot)")
        return {"free_bytes": free, "live_member": (data_dir / "member").is_dir()}

    def _step_prepare(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        problems = argv_problems(p)
        if problems:
            raise UnsafeRefusal(f"refusing to run the recorded restore command: {'; '.join(problems)}")
        data_dir = Path(p.data_dir)
        ws = workspace_dir(data_dir, p.op)
        # A tool left running by an interrupted prepare of this operation would keep writing
        # into the directory about to be redone: kill it (proven ours) first.
        killed = toolproc.kill_leftovers(p.restore_argv, op.dir)
        if killed:
            op.journal("killed-leftover-tool", processes=killed)
        # Our own scratch areas from an interrupted prepare of this very operation.
        swap.remove_prepared(data_dir, p.op, Path(p.wal_dir) if p.wal_dir else None)
        fsutil.ensure_private_dir(ws)
        if p.wal_dir:
            fsutil.ensure_private_dir(swap.wal_workspace(Path(p.wal_dir), p.op))
        out = toolproc.run_tool(p.restore_argv, self.tool.env(), PREPARE_TIMEOUT, op.dir, low_priority=True)
        if out.returncode != 0:
            raise ToolError(f"{Path(p.restore_argv[0]).name} snapshot restore failed (exit {out.returncode}): "
                            f"{failure_reason(out.stderr or out.stdout)}")
        prepared = prepared_member(data_dir, p.op)
        if not (prepared / "snap" / "db").is_file():
            raise ToolError(f"restore produced no {prepared}/snap/db")
        reference = data_dir / "member" if (data_dir / "member").is_dir() else data_dir
        total = copy_ownership_and_sync(reference, prepared)
        if p.wal_dir:
            total += copy_ownership_and_sync(Path(p.wal_dir), wal_target(Path(p.wal_dir), p.op))
        return {"prepared": str(prepared), "bytes": total}

    def _step_fence(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        if self.runtime.apiserver is None:
            return {"apiserver": "none"}
        self.runtime.apiserver.stop(self.config.restore.stop_timeout)
        return {"apiserver": "stopped"}

    def _step_stop(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        started = time.monotonic()
        # Every member of a cluster restore stops at once: a leader's graceful hand-over has nowhere
        # to go and only lengthens the downtime, and etcd is crash-safe (its old data is set aside).
        cluster = op.record().get("kind") == "cluster"
        self.runtime.etcd.stop(self.config.restore.stop_timeout, grace=0.0 if cluster else None)
        return {"etcd": "stopped", "seconds": round(time.monotonic() - started, 3)}

    def _prove_stopped(self, p: RestoreParams) -> None:
        ok, why = etcd_stopped(self.member.endpoints, Path(p.data_dir))
        if not ok:
            raise UnsafeRefusal(f"etcd is not proven stopped ({why}); refusing to touch {p.data_dir}")

    def _step_swap(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        self._prove_stopped(p)
        result: dict[str, Any] = swap.swap_in(Path(p.data_dir), p.op, Path(p.wal_dir) if p.wal_dir else None)
        return result

    def _wait_healthy(self, min_revision: int, timeout: float) -> EtcdStatus:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                with EtcdClient(self.member.endpoint, self.member.tls, min(5.0, timeout)) as c:
                    st = c.status()
                if st.healthy and st.revision >= min_revision:
                    return st
                last = f"revision {st.revision}, leader {st.leader:x}, errors {list(st.errors)}"
            except EtcdUnavailable as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise EtcdUnavailable(f"etcd not healthy within {timeout:.0f}s: {last}")
            time.sleep(0.1)

    def _step_start(self, op: Operation, p: RestoreParams, wait: bool = True) -> dict[str, Any]:
        self.runtime.etcd.start(self.config.restore.start_timeout)
        if not wait:
            return {"etcd": "started"}
        st = self._wait_healthy(0, self.config.restore.start_timeout)
        return {"etcd": "healthy", "revision": st.revision}

    def _step_verify(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        st = self._wait_healthy(0, self.config.restore.start_timeout)
        if st.revision < p.expected_min_revision:
            raise UnsafeRefusal(f"restored revision {st.revision} is below the expected {p.expected_min_revision}")
        with EtcdClient(self.member.endpoint, self.member.tls, self.config.etcd.dial_timeout) as c:
            names = sorted(m.name for m in c.members())
            hashkv, _ = c.hashkv()
        planned = sorted(part.split("=", 1)[0] for part in p.initial_cluster.split(","))
        if names != planned:
            raise UnsafeRefusal(f"member list {names} differs from the planned {planned}")
        return {"revision": st.revision, "members": names, "hashkv": hashkv, "cluster_id": f"{st.cluster_id:x}"}

    def _step_unfence(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        if self.runtime.apiserver is None:
            return {"apiserver": "none"}
        self.runtime.apiserver.start(self.config.restore.start_timeout)
        return {"apiserver": self._wait_apiserver()}

    def _wait_apiserver(self) -> str:
        """With apiserver.health_url set, wait until it answers 200; else report 'started'."""
        url = self.config.apiserver.health_url if self.config.apiserver else None
        if not url:
            return "started"
        deadline = time.monotonic() + self.config.restore.start_timeout
        last = ""
        while time.monotonic() < deadline:
            ok, last = probe_http(url)
            if ok:
                return "healthy"
            time.sleep(0.2)
        raise EtcdguardError(f"kube-apiserver started but {url} did not answer 200 within "
                             f"{self.config.restore.start_timeout:.0f}s: {last}")

    def _step_restart(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        """restart-controllers: stop (proven) and start each [[restart]] service, so none serves old caches."""
        from etcdguard.agent.runtime.factory import make_restart_services

        restarted = []
        for service in make_restart_services(self.config, self.config.state.dir):
            service.stop(self.config.restore.stop_timeout)
            service.start(self.config.restore.start_timeout)
            restarted.append(service.name)
        return {"restarted": restarted}

    # -- the undo of each step (a cluster rollback sends them, newest first) ---
    def _undo_prepare(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        killed = toolproc.kill_leftovers(p.restore_argv, op.dir)
        removed = swap.remove_prepared(Path(p.data_dir), p.op, Path(p.wal_dir) if p.wal_dir else None)
        return {"removed": removed, "killed": killed}

    def _undo_fence(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        if self.runtime.apiserver is None:
            return {"apiserver": "none"}
        if not self.runtime.apiserver.is_running():
            self.runtime.apiserver.start(self.config.restore.start_timeout)
        return {"apiserver": self._wait_apiserver()}

    def _undo_stop(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        """Start etcd again; the coordinator waits for quorum (one member alone never gets healthy)."""
        self.runtime.etcd.start(self.config.restore.start_timeout)
        return {"etcd": "started"}

    def _undo_swap(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        self._prove_stopped(p)
        notes = swap.swap_out(Path(p.data_dir), p.op, Path(p.wal_dir) if p.wal_dir else None)
        op.journal("swapped-back", label="failed")
        return {"notes": notes}

    def _undo_start(self, op: Operation, p: RestoreParams) -> dict[str, Any]:
        self.runtime.etcd.stop(self.config.restore.stop_timeout)
        return {"etcd": "stopped"}

    def finish(self, op: Operation, outcome: str) -> dict[str, Any]:
        """Close an operation a coordinator ran (done, failed or rolled back): backups resume here."""
        record = op.record()
        if record.get("state") == "running":
            record = op.update(state=outcome, finished_at=time.time())
            op.journal("finished", outcome=outcome)
        return {"op": op.op, "state": record.get("state")}

    # -- undo ----------------------------------------------------------------
    def undo_before_swap(self, op: Operation) -> list[str]:
        """Remove the prepared data and make sure etcd and kube-apiserver run again."""
        p = self.params_of(op)
        notes = [f"killed leftover restore tool {k}" for k in toolproc.kill_leftovers(p.restore_argv, op.dir)]
        notes += [f"removed prepared data {path}"
                  for path in swap.remove_prepared(Path(p.data_dir), p.op, Path(p.wal_dir) if p.wal_dir else None)]
        for step in BEFORE_SWAP:  # a retry starts over from preflight
            op.forget(step)
        op.journal("undone", before="swap")
        return notes + self._restart_all()

    def swap_back(self, op: Operation, label: str = "failed") -> list[str]:
        """Put the pre-restore data back (the restored data is kept in the workspace)."""
        p = self.params_of(op)
        data_dir = Path(p.data_dir)
        if not aside_member(data_dir, p.op).exists():
            return [f"{aside_member(data_dir, p.op)} does not exist: the live data was never set aside, "
                    "nothing to swap back", *self._restart_all()]
        if self.runtime.apiserver is not None:
            self.runtime.apiserver.stop(self.config.restore.stop_timeout)
        self.runtime.etcd.stop(self.config.restore.stop_timeout)
        self._prove_stopped(p)
        notes = swap.swap_out(data_dir, p.op, Path(p.wal_dir) if p.wal_dir else None, label)
        op.journal("swapped-back", label=label)
        return notes + self._restart_all()

    def _restart_all(self) -> list[str]:
        notes: list[str] = []
        if not self.runtime.etcd.is_running():
            self.runtime.etcd.start(self.config.restore.start_timeout)
            notes.append("etcd started")
        self._wait_healthy(0, self.config.restore.start_timeout)
        if self.runtime.apiserver is not None and not self.runtime.apiserver.is_running():
            self.runtime.apiserver.start(self.config.restore.start_timeout)
            notes.append(f"kube-apiserver {self._wait_apiserver()}")
        return notes

    # -- whole operations ----------------------------------------------------
    def run(self, params: RestoreParams, *, recorded: Optional[Recorded] = None,
            force: bool = False) -> Outcome:
        """All steps in order; on failure undo as the design's table says, then raise StepFailed.

        A new operation first passes the node-local checks (local_checks); a
        resumed one first re-verifies its snapshot (reverify). Either refusal
        happens before any step runs.
        """
        with self.ops.exclusive(f"restore {params.op}"):
            op = self.ops.get(params.op)
            if op.exists():
                for note in self.reverify(op, full=True):
                    self.progress("resume", note)
                op = self.open_operation(params)
            else:
                checks = self.local_checks(params, recorded, force)
                if checks.refusals:
                    raise UnsafeRefusal("; ".join(checks.refusals) + ". Nothing was changed")
                op = self.open_operation(params, checks=checks)
            results: list[dict[str, Any]] = []
            for step in STEPS:
                try:
                    results.append({"step": step, **self.run_step(op, step)})
                except (EtcdguardError, OSError, subprocess.SubprocessError) as exc:
                    op.journal("failed", step=step, error=str(exc))
                    raise self._recover(op, step, exc) from exc
            op.update(state="done", finished_at=time.time())
            return Outcome(params.op, True, "done", results)

    def _recover(self, op: Operation, step: str, exc: BaseException) -> StepFailed:
        code = exc.exit_code if isinstance(exc, EtcdguardError) else 1
        try:
            if step in BEFORE_SWAP:
                notes = self.undo_before_swap(op)
                op.update(state="failed", failed_step=step, error=str(exc))
            elif step == "unfence":
                notes = ["data is restored; kube-apiserver did not start: start it by hand"]
                op.update(state="failed-needs-attention", failed_step=step, error=str(exc))
            else:
                notes = self.swap_back(op)
                for s in ("swap", "start", "verify"):
                    op.forget(s)
                op.update(state="failed", failed_step=step, error=str(exc))
        except (EtcdguardError, OSError) as undo_exc:
            op.update(state="failed-needs-attention", failed_step=step, error=str(exc), undo_error=str(undo_exc))
            return StepFailed(step, f"step {step} failed: {exc}; undoing it ALSO failed: {undo_exc}. "
                                    f"Look at {op.dir}/journal.jsonl", exit_code=1)
        return StepFailed(step, f"step {step} failed: {exc}; undone: {'; '.join(notes) or 'nothing to undo'}",
                          exit_code=code)

    def backwards_risk(self, op: Operation) -> Optional[str]:
        """Why rolling ``op`` back sends revisions backwards, or None while no client saw its data."""
        finished = [s for s in STEPS if op.finished(s) is not None]
        started = [str(e.get("step")) for e in op.journal_lines() if e.get("event") == "started"]
        if not rollback_goes_backwards(finished, started):
            return None
        verified = op.finished("verify")
        seen = verified.result.get("revision") if verified is not None else None
        upto = f" (revision {seen:,} or later)" if isinstance(seen, int) else ""
        return (f"restore {op.op} was unfenced: kube-apiserver and its clients may have seen the restored "
                f"revisions{upto}. Rolling back puts the older data back, so revisions go backwards: "
                "Kubernetes watch caches and informers may miss changes or serve stale objects until "
                "every client re-lists. A forward restore (a newer snapshot, restored with a revision bump) "
                "avoids this")

    def rollback(self, op_id: str, *, backwards_ok: bool = False) -> Outcome:
        """Swap the pre-restore data back in for a finished operation.

        After unfence this needs ``backwards_ok`` (the operator's --yes): see backwards_risk.
        """
        with self.ops.exclusive(f"roll back {op_id}"):
            op = self.ops.get(op_id)
            record = op.load()   # nothing is undone on a guess of what a damaged record said
            if record.get("state") == "rolled-back":
                return Outcome(op_id, True, "rolled-back", [], error=None)
            risk = self.backwards_risk(op)
            if risk is not None and not backwards_ok:
                raise UnsafeRefusal(f"{risk}. Nothing was changed; to roll back anyway run "
                                    f"`etcdguard-agent rollback {op_id} --yes`")
            if risk is not None:
                op.journal("rollback-backwards-confirmed", risk=risk)
            op.journal("rollback-started")
            if op.finished("swap") is None and not aside_member(Path(self.params_of(op).data_dir), op_id).exists():
                # Never swapped: rolling back means no prepared data and etcd + kube-apiserver running.
                notes = self.undo_before_swap(op)
            else:
                notes = self.swap_back(op, label="rolled-back")
            op.update(state="rolled-back", rolled_back_at=time.time())
            return Outcome(op_id, True, "rolled-back", [{"step": "rollback", "notes": notes}])

    def cleanup(self, op_id: str) -> list[str]:
        """Delete an operation's kept data (only when the operator asks)."""
        with self.ops.exclusive(f"clean up {op_id}"):
            op = self.ops.get(op_id)
            record = op.record()
            if record.get("state") not in ("done", "rolled-back", "failed"):
                raise UnsafeRefusal(f"operation {op_id} is {record.get('state')}; clean up only finished operations")
            p = self.params_of(op)
            removed = []
            for path in swap.kept_paths(Path(p.data_dir), op_id, Path(p.wal_dir) if p.wal_dir else None):
                shutil.rmtree(path)
                removed.append(str(path))
            op.update(cleaned_at=time.time())
            op.journal("cleaned", removed=removed)
            return removed


def probe_http(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET a local health endpoint (a self-signed apiserver cert is accepted: this is a liveness probe)."""
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as exc:
        return False, str(exc)


def kept_dirs(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> list[tuple[str, int]]:
    """(path, bytes) of what an operation keeps on disk."""
    return [(str(path), du(path)) for path in swap.kept_paths(data_dir, op, wal_dir)]


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def copy_ownership_and_sync(reference: Path, tree: Path) -> int:
    """Give ``tree`` the owner, group (and SELinux label) of ``reference``; the top dir also
    its mode. fsync every file and directory. Returns the bytes in the tree."""
    st = os.stat(reference)
    label: Optional[bytes] = None
    with contextlib.suppress(OSError, AttributeError):
        label = os.getxattr(reference, SELINUX_XATTR)
    total = 0
    for root, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            _adopt(os.path.join(root, name), st, label)
        for f in files:
            path = os.path.join(root, f)
            total += os.lstat(path).st_size
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsutil.fsync_dir(Path(root))
    _adopt(str(tree), st, label)
    os.chmod(tree, st.st_mode & 0o7777)
    return total


def _adopt(path: str, st: os.stat_result, label: Optional[bytes]) -> None:
    os.lchown(path, st.st_uid, st.st_gid)
    if label is not None:
        with contextlib.suppress(OSError):
            os.setxattr(path, SELINUX_XATTR, label, follow_symlinks=False)
