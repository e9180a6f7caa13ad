"""The coordinator's operation journals: one per operation, on the shared journal library.

Every record is appended and fsync'ed before the step it announces is sent
(``started``) and after its result is known (``done``/``failed``), so after a
crash of the coordinator the journal says exactly which steps may have run:
a resume re-sends what started without finishing (the agents deduplicate by
operation and step) and skips what is done. A torn last line is cut back
before the next append (common/journal.py); any other unreadable record
marks the journal damaged: it is listed, counted, blocks new operations and
``--resume``, while ``--rollback`` works from what can be read.

Layout: ``<state_dir>/restores/<op>/journal.jsonl``. The first record holds
the plan; the record is folded by the one reducer (common/ops/record.py)
with the cluster transitions table.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import UsageError
from etcdguard.common.journal import (
    JOURNAL,
    JournalDamaged,
    JournalFile,
    check_op_id,
    exclusive_lock,
    operation_dirs,
)
from etcdguard.common.ops import states
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.flows import CLUSTER_RESTORE, FLOWS, Flow
from etcdguard.common.ops.record import OpLog, OpRecord, replay
from etcdguard.common.ops.states import OpState

RESTORES = "restores"


@dataclass
class ClusterOperation:
    """A cluster operation: its journal, the live record the journal folds into, and its plan."""

    log: OpLog
    plan: RestorePlan

    @property
    def op(self) -> str:
        return self.log.op

    @property
    def record(self) -> OpRecord:
        return self.log.record

    @property
    def state(self) -> OpState:
        return self.log.record.state

    @property
    def error(self) -> Optional[str]:
        return self.log.record.error

    @property
    def failed_phase(self) -> Optional[str]:
        return self.log.record.failed_phase

    @property
    def facts(self) -> dict[str, Any]:
        return self.log.record.facts

    @property
    def flow(self) -> Flow:
        return FLOWS.get(self.plan.flow, CLUSTER_RESTORE)

    def reached(self) -> list[str]:
        """Steps that started, in flow order."""
        return [name for name in self.flow.names if name in self.record.phases]

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        return {
            "op": rec.op, "state": rec.state.value, "plan_id": self.plan.plan_id, "kind": self.plan.kind,
            "snapshot": self.plan.snapshot.id if self.plan.snapshot else None, "flow": self.plan.flow,
            "target": self.plan.target, "created_at": rec.created_at, "ended_at": rec.ended_at,
            "until": rec.until, "error": rec.error, "failed_phase": rec.failed_phase,
            "phases": {k: vars(v) for k, v in rec.phases.items()},
            "reverts": {k: vars(v) for k, v in rec.reverts.items()},
            "facts": rec.facts, "members": [m.member for m in self.plan.members],
        }


def plan_of(rec: OpRecord) -> RestorePlan:
    try:
        return RestorePlan.from_json(rec.header.get("plan"))
    except ValueError as exc:
        raise JournalDamaged(f"restore operation {rec.op}: the plan in its journal cannot be read: {exc}") from None


class JournalStore:
    """All operations' journals under ``<state_dir>/restores``; the lock that makes one run at a time."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / RESTORES
        self.lock_path = state_dir / "restore.lock"

    def path(self, op: str) -> Path:
        return self.root / check_op_id(op) / JOURNAL

    def open(self, op: str) -> ClusterOperation:
        """The operation, replayed; UsageError if there is none, JournalDamaged if it cannot be read."""
        path = self.path(op)
        try:
            log = OpLog.open(path, op, states.CLUSTER)
        except FileNotFoundError:
            raise UsageError(f"no restore operation {op!r} (see `etcdguardctl restores`)") from None
        return ClusterOperation(log, plan_of(log.record))

    def create(self, plan: RestorePlan, until: Optional[str] = None) -> ClusterOperation:
        path = self.path(plan.op)
        if path.exists():
            raise UsageError(f"restore operation {plan.op} already exists")
        log = OpLog.create(path, plan.op, "planned", states.CLUSTER, plan=plan.to_json(), until=until)
        return ClusterOperation(log, plan)

    def salvage(self, op: str) -> ClusterOperation:
        """A damaged journal's readable records, carried into a fresh journal so the operation can be
        rolled back; the damaged file is kept beside it (``journal.damaged-<time>.jsonl``)."""
        path = self.path(op)
        try:
            read = JournalFile(path).read()
        except FileNotFoundError:
            raise UsageError(f"no restore operation {op!r} (see `etcdguardctl restores`)") from None
        if read.damage is None:
            return self.open(op)
        replay(op, read.records, states.CLUSTER, str(path))   # the readable history must still make sense
        kept = path.with_name(f"journal.damaged-{int(time.time())}.jsonl")
        os.rename(path, kept)
        fsutil.fsync_dir(path.parent)
        fresh = JournalFile(path)
        for record in read.records:
            fields = {k: v for k, v in record.items() if k != "event"}
            fresh.append(str(record["event"]), **fields)
        fresh.append("salvaged", damage=read.damage, damaged_journal=str(kept))
        return self.open(op)

    def ids(self) -> list[str]:
        return [d.name for d in operation_dirs(self.root) if (d / JOURNAL).is_file()]

    def read_all(self) -> tuple[list[ClusterOperation], list[tuple[str, str]]]:
        """(every operation that can be read, oldest first; (op, why) of each journal that cannot)."""
        good, bad = [], []
        for op in self.ids():
            try:
                good.append(self.open(op))
            except (JournalDamaged, UsageError, OSError) as exc:
                bad.append((op, str(exc)))
        return sorted(good, key=lambda r: r.record.created_at), bad

    def all(self) -> list[ClusterOperation]:
        return self.read_all()[0]

    def damaged(self) -> list[tuple[str, str]]:
        """(op, why) of each journal that cannot be read back: maybe a restore that ran half-way."""
        return self.read_all()[1]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while an operation runs: a second coordinator on this state dir is refused."""
        with exclusive_lock(self.lock_path, "run a restore: another restore runs on this coordinator's state dir"):
            yield
