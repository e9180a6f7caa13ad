"""The agent's status report and ``etcd.inspect``: what the coordinator learns of this node.

Whatever the agent says of etcd's health, role, leader and revision was
measured within the last few seconds, or is said to be unknown, with the age
of the last measurement: an operator and a restore act on it as the state of
now. One measurement (``measure``) asks etcd's status first, with a short
deadline (the member answers it itself, also without quorum), then its member
list, and the alarm list only when the member has a leader: that one is a
raft request, and no answer within its short deadline means no quorum.

``status`` must answer fast even when etcd does not, so etcd is measured by a
background probe (``EtcdProbe``): a reply waits briefly for a fresh
measurement and otherwise carries the last one, as it was if it is younger
than FRESH_FOR, else as "not measured now" (``reported``). ``etcd.inspect``
(a restore's fence and verify checks) measures in the request itself; with
the short deadlines it answers in well under a second also for a member
without quorum or whose etcd is down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent import certs
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.restore.records import OperationStore
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.common import __version__
from etcdguard.common.base import fsutil
from etcdguard.common.base.durations import format_duration, iso_utc
from etcdguard.common.base.errors import EtcdguardError, EtcdUnavailable
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.wire.report import (
    FRESH_FOR,
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

STATUS_DEADLINE = 0.5   # seconds for etcd's Status and MemberList, which the member answers itself
QUORUM_DEADLINE = 0.5   # seconds for the alarm list, a raft request: no answer by then means no quorum
ETCD_WAIT = 0.6         # seconds `status` waits for a fresh measurement (status, members and alarms fit)
STATUS_SNAPSHOTS = 5


def measure(client: EtcdClient, deadline: float = STATUS_DEADLINE,
            quorum_deadline: float = QUORUM_DEADLINE) -> EtcdHealth:
    """etcd asked now: status, member list and, under a leader, the alarm list. Never raises for etcd:
    what could not be learned is None, and the reason is in ``error``."""
    at = iso_utc(time.time())
    try:
        st = client.status(deadline)
    except EtcdUnavailable as exc:
        return EtcdHealth(error=str(exc), measured_at=at, age=0.0)
    problems = list(st.errors)           # etcd's own: "etcdserver: no leader", raised alarms
    members: tuple[ClusterMember, ...] = ()
    try:
        members = tuple(ClusterMember(f"{m.id:x}", m.name, m.peer_urls, m.is_learner)
                        for m in client.members(deadline))
    except EtcdUnavailable as exc:
        problems.append(f"member list: {exc}")
    alarms: list[str] = []
    quorum = False
    if st.leader:
        try:
            alarms = client.alarms(quorum_deadline)
            quorum = True
        except EtcdUnavailable as exc:
            problems.append(f"no quorum: a raft request (the alarm list) got no answer within "
                            f"{quorum_deadline:g}s ({exc})")
    return EtcdHealth(
        healthy=quorum and not problems and not alarms, error="; ".join([*problems, *alarms]) or None,
        version=st.version, revision=st.revision, member_id=f"{st.member_id:x}", cluster_id=f"{st.cluster_id:x}",
        leader=f"{st.leader:x}" if st.leader else None, is_leader=st.is_leader, is_learner=st.is_learner,
        db_size=st.db_size, alarms=tuple(alarms), members=members, measured_at=at, age=0.0, quorum=quorum,
        raft_applied_index=st.raft_applied_index, db_size_in_use=st.db_size_in_use, raft_index=st.raft_index,
        raft_term=st.raft_term)


def reported(last: Optional[EtcdHealth], age: float, pending: float, endpoint: str,
             fresh_for: float = FRESH_FOR) -> EtcdHealth:
    """What a status reply says of etcd, given the last measurement, made ``age`` seconds ago, while
    the one asked for has been pending ``pending`` seconds (pure).

    Younger than ``fresh_for``: the measurement as it was, with its age. Older:
    health, role, leader and revision are unknown (a stale "healthy" is how an
    operator once read a cluster without quorum as fine); what identifies the
    member stays, and the error says when etcd was last seen and how.
    """
    waiting = f"etcd at {endpoint} has not answered for {format_duration(pending)}"
    if last is None:
        return EtcdHealth(error=f"not measured yet: {waiting}", stale=True)
    if age <= fresh_for:
        return dataclasses.replace(last, age=round(age, 3))
    seen = (f"last seen healthy {format_duration(age)} ago" if last.healthy else
            f"last measured {format_duration(age)} ago: {last.error or 'not healthy'}")
    return EtcdHealth(error=f"not measured now ({waiting}); {seen}", stale=True, version=last.version,
                      member_id=last.member_id, cluster_id=last.cluster_id, is_learner=last.is_learner,
                      members=last.members, age=round(age, 3), measured_at=last.measured_at)


class EtcdProbe:
    """The local member's measurement for `status` replies, made off the reply path.

    One measurement at a time, in its own short-lived thread. A caller waits
    up to ``wait`` seconds for a fresh one and otherwise gets the last one
    through ``reported``, so a slow or hung etcd never makes the agent look
    dead, and never makes an old answer look current.
    """

    def __init__(self, deadline: float = STATUS_DEADLINE, quorum_deadline: float = QUORUM_DEADLINE) -> None:
        self.deadline = deadline
        self.quorum_deadline = quorum_deadline
        self._cond = threading.Condition()
        self._running = False
        self._began = 0.0
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
                self._began = time.monotonic()
                threading.Thread(target=self._probe, args=(member, min(self.deadline, dial_timeout),
                                                           min(self.quorum_deadline, dial_timeout)),
                                 name="etcd-probe", daemon=True).start()
            wanted = self._started
            self._cond.wait_for(lambda: self._finished >= wanted, timeout=wait)
            now = time.monotonic()
            return reported(self._result, now - self._at, now - self._began, member.endpoint)

    def _probe(self, member: LocalMember, deadline: float, quorum_deadline: float) -> None:
        began = time.monotonic()   # the age counts from when etcd was asked, not from its last answer
        try:
            result = self._ask(member, deadline, quorum_deadline)
        except Exception as exc:   # the probe thread's outermost level: logged, reported in status
            log.exception("etcd status probe failed")
            result = EtcdHealth(error=f"etcd status probe failed: {exc}", measured_at=iso_utc(time.time()))
        with self._cond:
            self._result, self._at = result, began
            self._finished = self._started
            self._running = False
            self._cond.notify_all()

    def _ask(self, member: LocalMember, deadline: float, quorum_deadline: float) -> EtcdHealth:
        try:
            if self._client is None or self._client[0] != member.endpoint:
                self.close()
                self._client = (member.endpoint, EtcdClient(member.endpoint, member.tls, deadline))
            health = measure(self._client[1], deadline, quorum_deadline)
        except EtcdguardError as exc:
            health = EtcdHealth(error=str(exc), measured_at=iso_utc(time.time()))
        if health.version is None:   # etcd did not answer: the next measurement starts a fresh channel
            self.close()
        return health

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
                           revision_source=meta.revision_source, pinned=meta.pinned, bundle=meta.bundle,
                           hashkv=meta.hashkv, hashkv_compact_revision=meta.hashkv_compact_revision,
                           key_count=meta.key_count)


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


def file_size(path: Path) -> Optional[int]:
    try:
        return path.stat().st_size
    except OSError:
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
                          store_free=free_bytes(runner.store.dir), staging_free=free_bytes(self._staging_dir),
                          db_file=file_size(member.data_dir / "member" / "snap" / "db")),
            snapshots=tuple(summary(m) for m in runner.store.list()[:STATUS_SNAPSHOTS]),
            restore=restore_info(config.state.dir),
            certificates=certs.current(config, member),
        )

    def inspect(self, hashkv_revision: Optional[int]) -> dict[str, Any]:
        """etcd measured now (not the probe's last answer): for a restore's fence and verify checks.

        The short deadlines of ``measure`` apply (a member without quorum or a
        stopped etcd is told in well under a second); a hashkv reads the whole
        store and keeps the configured ``dial_timeout``."""
        runner = self._runner()
        member = runner.member
        dial_timeout = runner.config.etcd.dial_timeout
        result: dict[str, Any] = {"member": member.name}
        try:
            with EtcdClient(member.endpoint, member.tls, dial_timeout) as client:
                result["etcd"] = to_json(measure(client, min(STATUS_DEADLINE, dial_timeout),
                                                 min(QUORUM_DEADLINE, dial_timeout)))
                if hashkv_revision is not None:
                    hash_, revision = client.hashkv(hashkv_revision)
                    result["hashkv"] = {"hash": hash_, "revision": revision, "asked": hashkv_revision}
        except EtcdguardError as exc:
            result["etcd"] = to_json(EtcdHealth(error=str(exc)))
        result["running"] = self._etcd_running()
        return result

    def close(self) -> None:
        self.probe.close()
