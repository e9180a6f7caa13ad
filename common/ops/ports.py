"""What a step may do: the two small interfaces the engines hand to the steps.

A step (common/ops/steps/) is written once, against these ports, and runs in
two places: its ``execute`` and ``undo`` on a node, through ``NodeServices``,
which the agent implements with its runtime, restore tool and data-dir swap;
its phase behaviour across the cluster, through ``ClusterRun``, which the
coordinator implements with its journal and its links to every agent. The
ports name capabilities, not steps, so neither engine needs to know a step's
name, and tests can drive a step with a port of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, TypeVar

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import MemberParams, RestoreParams
from etcdguard.common.ops.record import OpRecord
from etcdguard.common.wire.report import EtcdHealth

P = TypeVar("P", RestoreParams, MemberParams)
Emit = Callable[[Mapping[str, Any]], None]
Inspection = tuple[EtcdHealth, Optional[dict[str, Any]]]   # (health, hashkv result or None)


class Service(Protocol):
    """One managed service on a node (etcd, kube-apiserver, a controller)."""

    name: str       # "etcd", "kube-apiserver", ...
    backend: str    # "static-pod" | "systemd" | "process"

    def stop(self, timeout: float, grace: Optional[float] = None) -> None:
        """Stop it and prove it stopped within ``timeout`` seconds, else raise (nothing further is done).

        ``grace``: how long a process the agent signals itself gets between SIGTERM and SIGKILL
        (0: SIGKILL at once); backends whose stop is the kubelet's or systemd's ignore it."""

    def start(self, timeout: float) -> None:
        """Start it; returns once the start was requested and the process exists."""

    def is_running(self) -> bool:
        """Best current knowledge; cheap, no side effects."""

    def describe(self) -> str:
        """One line for a plan: how this service is stopped and started here."""


class NodeServices(Protocol):
    """What a step's execute and undo may do on one node (the agent implements it)."""

    @property
    def params(self) -> RestoreParams:
        """A restore's parameters (UnsafeRefusal in an operation of another flow)."""

    def params_as(self, kind: type[P]) -> P:
        """The operation's parameters as ``kind`` (the flow's own type); UnsafeRefusal when they are not."""

    def result_of(self, step: str) -> Optional[dict[str, Any]]:
        """The recorded result of ``step`` of this operation on this node, None while it is not done."""

    @property
    def in_cluster(self) -> bool:
        """This node's part of a cluster operation: the coordinator waits for quorum, stops are immediate."""

    @property
    def etcd(self) -> Service: ...

    @property
    def apiserver(self) -> Optional[Service]: ...

    @property
    def stop_timeout(self) -> float: ...

    @property
    def start_timeout(self) -> float: ...

    def note(self, event: str, **fields: Any) -> None:
        """A line in the operation's journal for the operator."""

    def verify_snapshot(self, just_verified: bool) -> None:
        """The snapshot is still the verified file (sha256 and size); raise otherwise."""

    def check_tool(self) -> None:
        """The recorded restore tool is present; raise otherwise."""

    def data_dir_free(self) -> int:
        """Free bytes on the data dir's filesystem; raise when the data dir does not exist."""

    def wal_dir_free(self) -> Optional[int]:
        """Free bytes on a separate WAL dir's filesystem, None when the WAL is inside the data dir."""

    def live_member_present(self) -> bool: ...

    def prepare_data(self) -> dict[str, Any]:
        """Restore the snapshot into a new directory beside the live data (while etcd runs)."""

    def remove_prepared(self) -> dict[str, Any]:
        """Remove what prepare_data made (never the live data); kill a restore tool left running."""

    def swap_in(self) -> dict[str, Any]:
        """Etcd proven stopped, set the live data aside and rename the prepared data in."""

    def swap_out(self) -> list[str]:
        """Etcd proven stopped, put the set-aside data back (the restored data is kept in the workspace,
        named for why: ``failed`` or ``rolled-back``)."""

    def wait_healthy(self, full: bool = False) -> dict[str, Any]:
        """Until the local etcd reports itself healthy: its revision and cluster id; with ``full`` also its
        member names and hashkv."""

    def wait_apiserver(self) -> str:
        """Until kube-apiserver answers its health check where one is configured; what was seen."""

    def restart_services(self) -> list[Service]:
        """What this node restarts after a restore so nothing serves pre-restore caches."""

    # -- a member replaced (it rejoins the cluster it left, without a restore) ---------------------------
    def set_aside(self) -> dict[str, Any]:
        """Etcd proven stopped, rename the member's data (and WAL) aside, kept as a restore keeps it."""

    def put_back(self) -> list[str]:
        """Etcd proven stopped, rename the data set aside back into place."""

    def start_joining(self, initial_cluster: str) -> dict[str, Any]:
        """Start etcd as a member joining an existing cluster (``--initial-cluster-state existing`` and
        ``initial_cluster``), through a temporary form of the runtime's configuration."""

    def settle(self) -> dict[str, Any]:
        """Put the runtime's configuration back exactly as it was before the join; etcd runs on it (healthy)."""


class ClusterRun(Protocol):
    """What a step's phase behaviour may do across the cluster (the coordinator implements it)."""

    @property
    def plan(self) -> RestorePlan: ...

    @property
    def record(self) -> OpRecord: ...

    @property
    def op(self) -> str: ...

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def timeouts(self) -> Timeouts: ...

    @property
    def left_out(self) -> frozenset[str]:
        """Members whose undo failed during this rollback; the others are put back without them."""

    def fact(self, key: str, value: Any) -> None: ...

    def say(self, phase: str, message: str, member: Optional[str] = None, **extra: Any) -> None: ...

    def emit(self, event: Mapping[str, Any]) -> None: ...

    def each(self, phase: str, action: Callable[[str], dict[str, Any]], *, revert: bool = False,
             members: Optional[Sequence[str]] = None) -> dict[str, dict[str, Any]]:
        """``action(member)`` on every member in parallel, each journaled; a barrier; raise on any failure.
        With ``revert``, a member whose undo fails is left out of the rest of the rollback instead."""

    def started(self, phase: str) -> list[str]:
        """Members whose step of ``phase`` was sent (it may have acted there)."""

    def send_step(self, member: str, step: str, params: Optional[Mapping[str, Any]], bound: float
                  ) -> dict[str, Any]: ...

    def send_undo(self, member: str, step: str, bound: float) -> Optional[dict[str, Any]]:
        """The undo of ``step`` on ``member``; None when the member has no such operation."""

    def inspect_all(self, names: Sequence[str], hashkv_revision: Optional[int] = None
                    ) -> dict[str, Inspection]:
        """Every member's etcd asked now, in parallel (an error is an unhealthy health)."""

    def pause(self, seconds: float) -> None:
        """Sleep, or raise the engine's Interrupted when the coordinator is stopping or the run is cancelled."""

    def safety_snapshot(self, emit: Emit) -> Optional[str]:
        """A snapshot of the live cluster into the vault, pinned; its id."""

    def held_snapshot(self, member: str) -> Optional[str]:
        """The name of the plan's snapshot in ``member``'s own store or staging area, if it holds it verified."""

    def upload(self, member: str, progress: Callable[[int, int], None]) -> dict[str, Any]:
        """Send the plan's snapshot to ``member``'s staging area (resumable, sha256 checked there)."""

    def abort_upload(self, member: str) -> None: ...

    def etcd_admin(self, member: str, action: str, args: Mapping[str, Any], bound: float) -> dict[str, Any]:
        """Ask ``member``'s agent to make one administrative call to its etcd (member-list, member-add,
        member-remove, member-promote, defragment, alarm-disarm); the agent's answer."""


@dataclass(frozen=True)
class Timeouts:
    step: float = 300.0           # one ordinary step on one member (stop, swap, start, ...)
    prepare: float = 3600.0       # the restore tool on a large snapshot, while etcd still serves
    stage: float = 3600.0         # one upload (it resumes after a lost connection)
    agent_down: float = 60.0      # an agent that stops answering mid-operation gets this long to come back
