"""preflight: prove the restore can run before anything is touched.

On a node: the snapshot is still the verified file, the restore tool is there,
the data dir exists and its filesystem has room for the restored copy
(common/ops/space.py). Across the cluster: the plan's checks ran when it was
made, so here the moment is recorded (the live revision and cluster id, read
fresh) and the safety net made: a pre-restore snapshot of the live cluster
into the vault, skipped at once, with the reason, when no member answers.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.base.errors import UnsafeRefusal
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.params import RestoreParams
from etcdguard.common.ops.ports import ClusterRun, NodeServices
from etcdguard.common.ops.space import restore_space
from etcdguard.common.ops.step import Step, StepFailed


class Preflight(Step):
    name = "preflight"
    on_failure = "abort: nothing changed"

    def what(self, plan: RestorePlan) -> str:
        safety = ("take a pre-restore safety snapshot of the live cluster into the vault (pinned)"
                  if plan.safety_snapshot else "no safety snapshot (the live cluster does not answer)")
        return ("every agent reachable; member list, tools, disk, quota and versions checked; the vault copy "
                f"verified; live revision recorded; {safety}")

    def describe_node(self, p: RestoreParams, etcd: str, apiserver: Optional[str]) -> str:
        need = restore_space(p.snapshot_size, bool(p.wal_dir))
        return (f"verify {p.snapshot} (sha256 {p.snapshot_sha256[:16]}..., {p.snapshot_size} bytes, "
                f"revision {p.snapshot_revision} read from the file); restore tool present; free disk >= "
                f"{need.describe()}")

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        """``just_verified``: the operation was opened by the same request right after its snapshot was
        verified in full; the file is hashed again only if it changed since."""
        p = node.params
        node.verify_snapshot(bool(options.get("just_verified")))
        node.check_tool()
        free = node.data_dir_free()
        need = restore_space(p.snapshot_size, bool(p.wal_dir))
        if free < need.data_dir:
            raise UnsafeRefusal(f"not enough free disk on {p.data_dir}'s filesystem: {format_bytes(free)} free, "
                                f"the restore needs {format_bytes(need.data_dir)} (the database, "
                                "the WAL etcd preallocates and a margin)")
        wal_free = node.wal_dir_free()
        if need.wal_dir and wal_free is not None and wal_free < need.wal_dir:
            raise UnsafeRefusal(f"not enough free disk on {p.wal_dir}'s filesystem: {format_bytes(wal_free)} "
                                f"free, the restored WAL needs {format_bytes(need.wal_dir)}")
        return {"free_bytes": free, "live_member": node.live_member_present()}

    def phase(self, run: ClusterRun) -> None:
        health = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
        live = [h for h in health.values() if h.healthy]
        revisions = [h.revision for h in health.values() if h.revision is not None]
        revision = max(revisions) if revisions else None
        ids = sorted({h.cluster_id for h in live if h.cluster_id})
        run.fact("live_revision", revision)
        run.fact("down_before", not live)
        run.fact("old_cluster_id", ids[0] if len(ids) == 1 else run.plan.live_cluster_id)
        plan = run.plan
        if revision is not None and plan.bump_revision and revision >= plan.expected_min_revision:
            raise StepFailed(self.name, f"the live revision {revision:,} has reached the restored revision "
                                        f"{plan.expected_min_revision:,}; plan again (a larger bump)", 3)
        if plan.safety_snapshot and "pre_restore_snapshot" not in run.record.facts:
            self._safety_snapshot(run, live=bool(live))

    def _safety_snapshot(self, run: ClusterRun, *, live: bool) -> None:
        if not live:
            run.say(self.name, "no member has quorum now: no safety snapshot can be taken (skipped)")
            run.fact("pre_restore_snapshot_skipped", "no member had quorum when preflight ran")
            return
        sha = run.safety_snapshot(lambda e: run.emit({"phase": self.name, **e}))
        run.fact("pre_restore_snapshot", sha)


STEP = Preflight()
