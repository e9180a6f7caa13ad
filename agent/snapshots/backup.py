"""One backup run: snapshot, verify, catalog, retention, metrics. Shared by the
daemon's schedule, `etcdguard-agent snapshot` and the coordinator's requests."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.agent.snapshots.take import Progress, Source, take_snapshot
from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import (
    Aborted,
    DiskError,
    EtcdguardError,
    EtcdUnavailable,
    SnapshotCorrupt,
    ToolError,
)
from etcdguard.common.base.freshness import future_dated
from etcdguard.common.base.slot import Slot
from etcdguard.common.etcd.client import Cancellation
from etcdguard.common.snapshot.sidecar import SnapshotMeta
from etcdguard.common.snapshot.tools import SnapshotTool, find_tool

log = logging.getLogger(__name__)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, Aborted):
        return "aborted"
    if isinstance(exc, EtcdUnavailable):
        return "timeout" if "DEADLINE_EXCEEDED" in str(exc) else "etcd_unavailable"
    if isinstance(exc, SnapshotCorrupt):
        return "corrupt"
    if isinstance(exc, ToolError):
        return "tool"
    if isinstance(exc, (DiskError, OSError)):
        return "disk"
    return "other"


SCHEDULED = "snapshot (scheduled)"   # what the slot says while the daemon's own snapshot runs


class BackupRunner:
    """Takes snapshots one at a time (a single slot, which says what holds it: two can never overlap)."""

    def __init__(self, config: AgentConfig, member: LocalMember, metrics: AgentMetrics) -> None:
        self.config = config
        self.member = member
        self.metrics = metrics
        self.store = SnapshotStore(config.backup.dir)
        self.slot = Slot()
        self._tool: Optional[SnapshotTool] = None
        self._tool_checked = False
        self.current: Optional[Cancellation] = None
        self._future_logged = 0

    def tool(self) -> Optional[SnapshotTool]:
        if not self._tool_checked:
            self._tool_checked = True
            try:
                self._tool = find_tool(self.config.etcd.restore_tool)
            except ToolError as exc:
                log.warning("no snapshot tool (%s): snapshot revisions will be lower bounds", exc)
        return self._tool

    def refresh_store_metrics(self) -> list[SnapshotMeta]:
        metas = self.store.list()
        self.metrics.retained.set(len(metas))
        self.metrics.store_bytes.set(sum(m.size for m in metas))
        self.metrics.record_store([m.created_unix for m in metas])
        if metas:
            newest = metas[0]   # by revision (store.list), whatever the clocks stamped
            self.metrics.record_success(newest.created_unix, newest.size, newest.require_revision(), name=newest.name)
        future = future_dated([m.created_unix for m in metas], time.time())
        if future and future != self._future_logged:
            log.warning("%d snapshot(s) in %s are stamped in the future: the clock was stepped back since they "
                        "were taken; newest and retention go by revision (`etcdguard-agent check` lists them)",
                        future, self.store.dir)
        self._future_logged = future
        return metas

    def _bundle(self, meta: SnapshotMeta) -> SnapshotMeta:
        """The node bundle beside a new snapshot; a failure is logged and leaves the snapshot as it is."""
        from etcdguard.agent.snapshots.bundle import BundleError, write_bundle

        if not self.config.bundle.enabled:
            return meta
        try:
            path = write_bundle(self.config.bundle, self.store, meta.name)
        except BundleError as exc:
            log.warning("%s", exc)
            return meta
        if path is None:
            return meta
        return dataclasses.replace(meta, bundle="encrypted" if self.config.bundle.encrypt_to else "local")

    def run_once(self, progress: Optional[Progress] = None, cancel: Optional[Cancellation] = None, *,
                 label: str = "snapshot") -> SnapshotMeta:
        """Take one snapshot now, waiting for one that runs; raises EtcdguardError (already counted in metrics).

        ``label`` is what the slot says while it runs (status reports it as what the agent is busy with).
        """
        cancel = cancel or Cancellation()
        with self.slot.held(label, waiting=lambda doing: log.info("%s waits for %s to finish", label, doing)):
            self.current = cancel
            started = time.monotonic()
            try:
                meta = take_snapshot(
                    Source(self.member.endpoint, self.member.tls, self.member.name, self.config.etcd.dial_timeout),
                    self.store, tool=self.tool(), cancel=cancel,
                    timeout=self.config.backup.timeout, progress=progress,
                )
            except (EtcdguardError, OSError) as exc:
                self.metrics.record_failure(failure_reason(exc))
                if isinstance(exc, EtcdUnavailable):
                    self.metrics.etcd_up.set(0)
                raise
            finally:
                self.current = None
            self.metrics.etcd_up.set(1)
            self.metrics.record_success(meta.created_unix, meta.size, meta.require_revision(),
                                        time.monotonic() - started, name=meta.name)
            log.info("snapshot %s: %s, revision %d, sha256 %s..., %s", meta.name, format_bytes(meta.size),
                     meta.revision, meta.sha256[:12], format_duration(time.monotonic() - started))
            meta = self._bundle(meta)
            self.store.apply_retention(self.config.backup.keep, self.config.backup.max_age)
            self.refresh_store_metrics()
            return meta
