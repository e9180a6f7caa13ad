"""What a restore step may do on this node: the agent's side of common/ops/ports.NodeServices.

The steps (common/ops/steps/) say what happens and in which order; this
module is how it happens here: the runtime stops and starts etcd and
kube-apiserver (agent/runtime), the restore tool runs in its own process
group (toolproc.py), the data dir is swapped by rename (swap.py), and etcd is
asked through the agent's gRPC client.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, TypeVar

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.restore import swap, toolproc, warm
from etcdguard.agent.restore.ownership import copy_ownership_and_sync
from etcdguard.agent.restore.plan import argv_problems
from etcdguard.agent.runtime.base import NodeRuntime
from etcdguard.agent.runtime.proof import etcd_stopped
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError, EtcdUnavailable, ToolError, UnsafeRefusal
from etcdguard.common.base.polling import poll_until
from etcdguard.common.etcd.client import EtcdClient, EtcdStatus
from etcdguard.common.ops.params import MemberParams, NodeParams, RestoreParams
from etcdguard.common.ops.ports import Service
from etcdguard.common.ops.record import OpLog
from etcdguard.common.snapshot.integrity import verify_file
from etcdguard.common.snapshot.tools import SnapshotTool, failure_reason

# The restore tool runs while etcd still serves (no downtime), so it may take long on a big
# snapshot; the bound only catches a tool that hangs.
PREPARE_TIMEOUT = 3600.0
HEALTH_POLL = 0.1
APISERVER_POLL = 0.2
P = TypeVar("P", RestoreParams, MemberParams)


def fingerprint(path: Path) -> list[int]:
    """Cheap identity of a file's content: any write, rename over or truncate changes one of these."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class NodeServicesImpl:
    """NodeServices for one operation on this node."""

    def __init__(self, config: AgentConfig, member: LocalMember, runtime: NodeRuntime, tool: SnapshotTool, *,
                 oplog: OpLog, params: NodeParams, in_cluster: bool, rollback_requested: bool = False) -> None:
        self.config = config
        self.member = member
        self.runtime = runtime
        self.tool = tool
        self.oplog = oplog
        self._node = params
        self._in_cluster = in_cluster
        self.rollback_requested = rollback_requested

    # -- what the steps read ------------------------------------------------------
    @property
    def params(self) -> RestoreParams:
        return self.params_as(RestoreParams)

    @property
    def _params(self) -> RestoreParams:
        return self.params_as(RestoreParams)

    def params_as(self, kind: type[P]) -> P:
        if not isinstance(self._node, kind):
            raise UnsafeRefusal(f"operation {self._node.op} has no {kind.__name__} (it is of another flow)")
        return self._node

    def result_of(self, step: str) -> Optional[dict[str, Any]]:
        done = self.oplog.record.step_done(step)
        return done.result if done is not None and isinstance(done.result, dict) else None

    @property
    def in_cluster(self) -> bool:
        return self._in_cluster

    @property
    def etcd(self) -> Service:
        return self.runtime.etcd

    @property
    def apiserver(self) -> Optional[Service]:
        return self.runtime.apiserver

    @property
    def stop_timeout(self) -> float:
        return self.config.restore.stop_timeout

    @property
    def start_timeout(self) -> float:
        return self.config.restore.start_timeout

    def note(self, event: str, **fields: Any) -> None:
        self.oplog.emit(event, **fields)

    @property
    def _wal_dir(self) -> Optional[Path]:
        return Path(self._node.wal_dir) if self._node.wal_dir else None

    # -- preflight --------------------------------------------------------------------
    def verify_snapshot(self, just_verified: bool) -> None:
        p = self._params
        recorded = self.oplog.record.header.get("snapshot_fingerprint")
        if just_verified and recorded == fingerprint(Path(p.snapshot)):
            return
        verify_file(Path(p.snapshot), p.snapshot_sha256, p.snapshot_size)

    def check_tool(self) -> None:
        if not Path(self._params.restore_argv[0]).exists():
            raise ToolError(f"restore tool {self._params.restore_argv[0]} is gone")

    def data_dir_free(self) -> int:
        data_dir = Path(self._params.data_dir)
        if not data_dir.is_dir():
            raise UnsafeRefusal(f"data dir {data_dir} does not exist; create it (owned as etcd expects) first")
        return fsutil.free_bytes(data_dir)

    def wal_dir_free(self) -> Optional[int]:
        wal = self._wal_dir
        return fsutil.free_bytes(wal) if wal is not None and wal.is_dir() else None

    def live_member_present(self) -> bool:
        return (Path(self._node.data_dir) / "member").is_dir()

    # -- the data ----------------------------------------------------------------------
    def prepare_data(self) -> dict[str, Any]:
        p = self._params
        problems = argv_problems(p)
        if problems:
            raise UnsafeRefusal(f"refusing to run the recorded restore command: {'; '.join(problems)}")
        data_dir = Path(p.data_dir)
        op_dir = self.oplog.path.parent
        # A tool left running by an interrupted prepare of this operation would keep writing
        # into the directory about to be redone: kill it (proven ours) first.
        killed = toolproc.kill_leftovers(p.restore_argv, op_dir)
        if killed:
            self.note("killed-leftover-tool", processes=killed)
        # Our own scratch areas from an interrupted prepare of this very operation.
        swap.remove_prepared(data_dir, p.op, self._wal_dir)
        fsutil.ensure_private_dir(swap.workspace_dir(data_dir, p.op))
        if self._wal_dir is not None:
            fsutil.ensure_private_dir(swap.wal_workspace(self._wal_dir, p.op))
        adopted = warm.adopt(p)
        if adopted is not None:
            return {**adopted, "bytes": du(swap.prepared_member(data_dir, p.op))}
        low = bool(self.oplog.record.header.get("low_priority", True))
        out = toolproc.run_tool(p.restore_argv, self.tool.env(), PREPARE_TIMEOUT, op_dir, low_priority=low)
        if out.returncode != 0:
            raise ToolError(f"{Path(p.restore_argv[0]).name} snapshot restore failed (exit {out.returncode}): "
                            f"{failure_reason(out.stderr or out.stdout)}")
        prepared = swap.prepared_member(data_dir, p.op)
        if not (prepared / "snap" / "db").is_file():
            raise ToolError(f"restore produced no {prepared}/snap/db")
        reference = data_dir / "member" if (data_dir / "member").is_dir() else data_dir
        total = copy_ownership_and_sync(reference, prepared)
        if self._wal_dir is not None:
            total += copy_ownership_and_sync(self._wal_dir, swap.wal_target(self._wal_dir, p.op))
        return {"prepared": str(prepared), "bytes": total, "priority": "low" if low else "normal"}

    def remove_prepared(self) -> dict[str, Any]:
        p = self._params
        killed = toolproc.kill_leftovers(p.restore_argv, self.oplog.path.parent)
        removed = swap.remove_prepared(Path(p.data_dir), p.op, self._wal_dir)
        return {"removed": removed, "killed": killed}

    def _prove_stopped(self) -> None:
        ok, why = etcd_stopped(self.member.endpoints, Path(self._node.data_dir))
        if not ok:
            raise UnsafeRefusal(f"etcd is not proven stopped ({why}); refusing to touch {self._node.data_dir}")

    def swap_in(self) -> dict[str, Any]:
        self._prove_stopped()
        result: dict[str, Any] = swap.swap_in(Path(self._params.data_dir), self._params.op, self._wal_dir)
        return result

    def swap_out(self) -> list[str]:
        self._prove_stopped()
        label = "rolled-back" if self.rollback_requested else "failed"
        notes = swap.swap_out(Path(self._params.data_dir), self._params.op, self._wal_dir, label)
        self.note("swapped-back", label=label)
        return notes

    # -- health ----------------------------------------------------------------------------
    def wait_healthy(self, full: bool = False) -> dict[str, Any]:
        timeout = self.start_timeout
        last = ["no answer yet"]

        def healthy() -> Optional[EtcdStatus]:
            try:
                with EtcdClient(self.member.endpoint, self.member.tls, min(5.0, timeout)) as c:
                    st = c.status()
            except EtcdUnavailable as exc:
                last[0] = str(exc)
                return None
            if st.healthy:
                return st
            last[0] = f"revision {st.revision}, leader {st.leader:x}, errors {list(st.errors)}"
            return None

        try:
            st = poll_until(healthy, timeout, interval=HEALTH_POLL, what="etcd to be healthy",
                            last=lambda: last[0])
        except EtcdguardError as exc:
            raise EtcdUnavailable(f"etcd not healthy within {timeout:.0f}s: {last[0]}") from exc
        out: dict[str, Any] = {"revision": st.revision, "cluster_id": f"{st.cluster_id:x}"}
        if full:
            with EtcdClient(self.member.endpoint, self.member.tls, self.config.etcd.dial_timeout) as c:
                out["members"] = sorted(m.name for m in c.members())
                out["hashkv"] = c.hashkv()[0]
        return out

    def wait_apiserver(self) -> str:
        """With apiserver.health_url set, wait until it answers 200; else report 'started'."""
        url = self.config.apiserver.health_url if self.config.apiserver else None
        if not url:
            return "started"
        last = [""]

        def answers() -> bool:
            ok, last[0] = probe_http(url)
            return ok

        try:
            poll_until(answers, self.start_timeout, interval=APISERVER_POLL, what=f"{url} to answer 200")
        except EtcdguardError:
            raise EtcdguardError(f"kube-apiserver started but {url} did not answer 200 within "
                                 f"{self.start_timeout:.0f}s: {last[0]}") from None
        return "healthy"

    def restart_services(self) -> list[Service]:
        from etcdguard.agent.runtime.factory import make_restart_services

        return list(make_restart_services(self.config, self.config.state.dir))

    # -- a member replaced ---------------------------------------------------------------------
    def set_aside(self) -> dict[str, Any]:
        self._prove_stopped()
        return swap.set_aside(Path(self._node.data_dir), self._node.op, self._wal_dir)

    def put_back(self) -> list[str]:
        self._prove_stopped()
        return swap.put_back(Path(self._node.data_dir), self._node.op, self._wal_dir)

    def start_joining(self, initial_cluster: str) -> dict[str, Any]:
        from etcdguard.agent.runtime.joining import join_form

        p = self.params_as(MemberParams)
        if f"{p.name}={p.peer_url}" not in initial_cluster.split(","):
            raise UnsafeRefusal(f"the initial cluster {initial_cluster} has no entry {p.name}={p.peer_url}")
        if self.etcd.is_running():
            return {"etcd": "running already"}
        result = join_form(self.etcd, self.member, p.op).start(initial_cluster, self.start_timeout)
        return {**result, "initial_cluster": initial_cluster}

    def settle(self) -> dict[str, Any]:
        from etcdguard.agent.runtime.joining import join_form

        p = self.params_as(MemberParams)
        result = join_form(self.etcd, self.member, p.op).settle(self.start_timeout)
        if not self.etcd.is_running():
            self.etcd.start(self.start_timeout)
        health = self.wait_healthy()
        return {**result, "etcd": "healthy", "revision": health.get("revision")}


def probe_http(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """GET a local health endpoint (a self-signed apiserver cert is accepted: this is a liveness probe)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except (OSError, urllib.error.URLError) as exc:
        return False, str(exc)


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def kept_dirs(data_dir: Path, op: str, wal_dir: Optional[Path] = None) -> list[tuple[str, int]]:
    """(path, bytes) of what an operation keeps on disk."""
    return [(str(path), du(path)) for path in swap.kept_paths(data_dir, op, wal_dir)]
