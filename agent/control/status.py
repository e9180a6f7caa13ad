"""The agent's status report and ``etcd.inspect``: what the coordinator learns of this node.

``status`` must answer fast even when etcd does not, so etcd is asked by a
background probe (``EtcdProbe``) and a report carries its last answer and
that answer's age. ``etcd.inspect`` is the opposite: a restore's fence and
verify checks need etcd asked now, so it calls etcd itself, with a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.etcd.client import EtcdClient
from etcdguard.agent.restore.records import OperationStore
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.common import __version__
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.wire.report import (
    AgentInfo,
    AgentReport,
    ClusterMember,
    DiskInfo,
    EtcdHealth,
    MemberConfig,
    RestoreInfo,
    SnapshotSummary,
    ToolInfo,
)
from etcdguard.common.wire.typed import to_json

log = logging.getLogger(__name__)

ETCD_PROBE_TIMEOUT = 3.0        # seconds; deadline of the etcd status call behind `status`
ETCD_WAIT = 0.5                 # seconds `status` waits for a fresh etcd answer before reporting the last one
STATUS_SNAPSHOTS = 5


def etcd_health(client: EtcdClient) -> EtcdHealth:
    """Ask etcd now: status, member list and alarms (raises EtcdUnavailable)."""
    st = client.status()
    members = client.members()
    alarms = client.alarms()
    return EtcdHealth(
        healthy=st.healthy and not alarms, error="; ".join([*st.errors, *alarms]) or None, version=st.version,
        revision=st.revision, member_id=f"{st.member_id:x}", cluster_id=f"{st.cluster_id:x}",
        leader=f"{st.leader:x}" if st.leader else None, is_leader=st.is_leader, is_learner=st.is_learner,
        db_size=st.db_size, alarms=tuple(alarms),
        members=tuple(ClusterMember(f"{m.id:x}", m.name, m.peer_urls, m.is_learner) for m in members))


class EtcdProbe:
    """The local member's status for `status` replies, asked off the reply path.

    One call to etcd at a time, in its own short-lived thread. A caller waits
    up to ``wait`` seconds for a fresh answer and otherwise gets the last one
    with its age, so a slow or hung etcd never makes the agent look dead.
    """

    def __init__(self, timeout: float = ETCD_PROBE_TIMEOUT) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._running = False
        self._started = 0
        self._finished = 0
        self._result: Optional[EtcdHealth] = None
        self._at = 0.0
        self._client: Optional[tuple[str, EtcdClient]] = None

    def get(self, member: LocalMember, dial_timeout: float, wait: float = ETCD_WAIT) -> EtcdHealth:
        with self._cond:
            if not self._running:
                self._running = True
                self._started += 1
                threading.Thread(target=self._probe, args=(member, min(self.timeout, dial_timeout)),
                                 name="etcd-probe", daemon=True).start()
            wanted = self._started
            self._cond.wait_for(lambda: self._finished >= wanted, timeout=wait)
            if self._result is None:
                return EtcdHealth(error=f"etcd at {member.endpoint} has not answered yet")
            return dataclasses.replace(self._result, age=round(time.monotonic() - self._at, 3))

    def _probe(self, member: LocalMember, timeout: float) -> None:
        try:
            result = self._ask(member, timeout)
        except Exception as exc:   # the probe thread's outermost level: logged, reported in status
            log.exception("etcd status probe failed")
            result = EtcdHealth(error=f"etcd status probe failed: {exc}")
        with self._cond:
            self._result, self._at = result, time.monotonic()
            self._finished = self._started
            self._running = False
            self._cond.notify_all()

    def _ask(self, member: LocalMember, timeout: float) -> EtcdHealth:
        try:
            if self._client is None or self._client[0] != member.endpoint:
                self.close()
                self._client = (member.endpoint, EtcdClient(member.endpoint, member.tls, timeout))
            return etcd_health(self._client[1])
        except EtcdguardError as exc:
            self.close()
            return EtcdHealth(error=str(exc))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):   # a broken channel may fail to close; it is dropped anyway
                client[1].close()


def summary(meta: SnapshotMeta) -> SnapshotSummary:
    """What the status report tells of a catalogued snapshot."""
    return SnapshotSummary(name=meta.name, size=meta.size, sha256=meta.sha256, revision=meta.require_revision(),
                           created_at=meta.created_at, created_unix=meta.created_unix, member=meta.member,
                           member_id=meta.member_id, cluster_id=meta.cluster_id, etcd_version=meta.etcd_version,
                           revision_source=meta.revision_source, pinned=meta.pinned, bundle=meta.bundle)


def free_bytes(path: Path) -> Optional[int]:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return fsutil.free_bytes(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def member_config(runner: BackupRunner) -> MemberConfig:
    config, member = runner.config, runner.member
    apiserver = config.apiserver
    return MemberConfig(
        name=member.name, peer_url=member.peer_url, data_dir=str(member.data_dir),
        wal_dir=str(member.wal_dir) if member.wal_dir else None,
        runtime=config.etcd.runtime or member.runtime, endpoints=tuple(member.endpoints),
        initial_cluster=member.initial_cluster, quota_backend_bytes=member.quota_backend_bytes,
        apiserver=None if apiserver is None else str(apiserver.manifest or apiserver.unit or "command"),
        restart=tuple(str(r.manifest or r.unit or "command") for r in config.restart))


def restore_info(state_dir: Path) -> RestoreInfo:
    ops = OperationStore(state_dir)
    summaries = ops.summaries()
    last = summaries[-1] if summaries else None
    return RestoreInfo(locked=ops.locked(), last_op=last.op if last else None,
                       last_state=last.state.value if last else None,
                       open_ops=tuple(s.op for s in summaries if s.open))


class StatusReporter:
    """Builds the status report and answers ``etcd.inspect``; runs in the status worker."""

    def __init__(self, runner: Callable[[], BackupRunner], staging_dir: Path,
                 etcd_running: Callable[[], Optional[bool]]) -> None:
        self._runner = runner
        self._staging_dir = staging_dir
        self._etcd_running = etcd_running
        self.probe = EtcdProbe()

    def report(self, long_op: Optional[str]) -> AgentReport:
        """``long_op``: the label of what the long-op slot runs now, if anything."""
        runner = self._runner()
        config, member = runner.config, runner.member
        busy = long_op or runner.slot.doing
        tool = runner.tool()
        return AgentReport(
            agent=AgentInfo(version=__version__, busy=busy),
            member=member_config(runner),
            etcd=self.probe.get(member, config.etcd.dial_timeout),
            restore_tool=None if tool is None else ToolInfo(str(tool.path), tool.kind, tool.version,
                                                            tool.supports_bump),
            disk=DiskInfo(data_dir_free=free_bytes(member.data_dir),
                          wal_dir_free=free_bytes(member.wal_dir) if member.wal_dir else None,
                          store_free=free_bytes(runner.store.dir), staging_free=free_bytes(self._staging_dir)),
            snapshots=tuple(summary(m) for m in runner.store.list()[:STATUS_SNAPSHOTS]),
            restore=restore_info(config.state.dir),
        )

    def inspect(self, hashkv_revision: Optional[int]) -> dict[str, Any]:
        """etcd asked now (not the probe's cached answer): for a restore's fence and verify checks."""
        runner = self._runner()
        member = runner.member
        result: dict[str, Any] = {"member": member.name}
        try:
            with EtcdClient(member.endpoint, member.tls, runner.config.etcd.dial_timeout) as client:
                result["etcd"] = to_json(etcd_health(client))
                if hashkv_revision is not None:
                    hash_, revision = client.hashkv(hashkv_revision)
                    result["hashkv"] = {"hash": hash_, "revision": revision, "asked": hashkv_revision}
        except EtcdguardError as exc:
            result["etcd"] = to_json(EtcdHealth(error=str(exc)))
        result["running"] = self._etcd_running()
        return result

    def close(self) -> None:
        self.probe.close()
