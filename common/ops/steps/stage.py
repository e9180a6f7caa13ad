"""stage: put the plan's snapshot on every member, verified there, before anything is stopped.

The coordinator's own work (no agent step): a member that already holds the
snapshot (pre-staged in the background, or in its own store) is not sent it
again; its prepare verifies that file in full. Every other member receives
it through the resumable, credit-based upload and checks its sha256 against
the vault's. Staged copies are removed when the operation is done or rolled
back (best effort: a copy left behind only costs disk).
"""

from __future__ import annotations

import logging
from typing import Any

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed

log = logging.getLogger(__name__)


class Stage(Step):
    name = "stage"
    on_agent = False
    on_failure = "abort: staged copies removed"

    def what(self, plan: RestorePlan) -> str:
        snap = plan.restored
        return (f"send snapshot {snap.id[:12]} ({format_bytes(snap.size)}) to every agent that does not hold it "
                "yet, in parallel; each checks its sha256 against the vault's")

    def phase(self, run: ClusterRun) -> None:
        size = run.plan.restored.size

        def send(member: str) -> dict[str, Any]:
            held = run.held_snapshot(member)
            if held is not None:
                run.say(self.name, f"holds the snapshot already as {held}: not sent (its prepare verifies that "
                                   "file in full)", member)
                return {"staged": held, "sha256": run.plan.restored.id, "from_store": True}

            def progress(done: int, total: int) -> None:
                run.emit({"phase": self.name, "member": member, "bytes": done, "total": total})

            result = run.upload(member, progress)
            if not result.get("complete") or not result.get("staged"):
                raise StepFailed(self.name, f"{member}: the upload did not complete: {result}")
            run.say(self.name, f"staged {format_bytes(size)}, sha256 verified by the agent", member)
            return {"staged": result["staged"], "sha256": run.plan.restored.id}

        run.each(self.name, send)

    def revert(self, run: ClusterRun) -> None:
        remove_staged(run)

    def after_done(self, run: ClusterRun) -> None:
        remove_staged(run)


def remove_staged(run: ClusterRun) -> None:
    """Best effort: a staged copy that stays behind only costs disk, and the agent drops it at its next start."""
    for member in run.started(Stage.name):
        result = run.record.step_done(Stage.name, member)
        if result is not None and isinstance(result.result, dict) and result.result.get("from_store"):
            continue   # held before this operation: not ours to remove
        try:
            run.abort_upload(member)
        except EtcdguardError as exc:
            log.warning("member %s: could not remove the staged snapshot of %s: %s", member, run.op, exc)


STEP = Stage()
