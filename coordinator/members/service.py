"""Replacing a member and defragmenting, inside the coordinator daemon, on the operation engine.

Each is a flow (common/ops/flows.py: REPLACE, DEFRAG) run by the same
orchestrator, journals and agents as a restore, through the restore
service's runner: one operation at a time across all of them, interrupted
ones found at the daemon's start, ``--resume`` after a crash, ``--attach``
from anywhere. This module builds their plans from a fresh survey and maps
the operator's request to the runner; a replacement's rollback is allowed
only before the member was removed from etcd (nothing can bring its old id
back), after that it is finished forward with ``--resume``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Optional

from etcdguard.common.base.durations import iso_utc
from etcdguard.common.base.errors import UnsafeRefusal, UsageError
from etcdguard.common.journal import new_op_id
from etcdguard.common.ops.cluster_plan import RestorePlan, Summary
from etcdguard.common.ops.flows import DEFRAG, REPLACE, Flow
from etcdguard.common.wire.typed import to_json
from etcdguard.coordinator.agents.links import MemberLinks
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.members.plan import MemberFacts, build_defrag_plan, build_replace_plan
from etcdguard.coordinator.restore.service import Emit, RestoreService


def _text(args: Mapping[str, Any], key: str, command: str) -> Optional[str]:
    value = args.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise UsageError(f"{command}: {key!r} must be a non-empty string")
    return value


class MemberOperations:
    """What the daemon's `replace` and `defrag` commands do."""

    def __init__(self, *, config: Callable[[], CoordinatorConfig], links: Callable[[], MemberLinks],
                 restores: RestoreService) -> None:
        self._config = config
        self._links = links
        self.restores = restores

    # -- plans -----------------------------------------------------------------------------
    def facts(self, target: Optional[str], peer_url: Optional[str] = None) -> MemberFacts:
        config = self._config()
        names = [m.name for m in config.members]
        if target is not None and target not in names:
            raise UsageError(f"no member {target!r} in the coordinator's configuration (members: {', '.join(names)})")
        views = self._links().survey(config.coordinator.request_timeout)
        journals = self.restores.journals
        return MemberFacts(views=views, configured=config.members, target=target, peer_url=peer_url,
                           open_operations=self.restores.open_operations(),
                           known_operations=frozenset(journals.ids()))

    def replace_plan(self, member: str, peer_url: Optional[str] = None) -> RestorePlan:
        return build_replace_plan(self.facts(member, peer_url), op=new_op_id(), created_at=iso_utc(time.time()))

    def defrag_plan(self, member: Optional[str] = None) -> RestorePlan:
        return build_defrag_plan(self.facts(member), op=new_op_id(), created_at=iso_utc(time.time()))

    # -- the control commands ------------------------------------------------------------------
    def replace_command(self, args: Mapping[str, Any], emit: Emit) -> Any:
        def plan() -> RestorePlan:
            member = _text(args, "member", "replace")
            if member is None:
                raise UsageError("replace: give the MEMBER to replace")
            return self.replace_plan(member, _text(args, "peer_url", "replace"))

        return self._command(REPLACE, args, emit, plan)

    def defrag_command(self, args: Mapping[str, Any], emit: Emit) -> Any:
        return self._command(DEFRAG, args, emit, lambda: self.defrag_plan(_text(args, "member", "defrag")))

    def _command(self, flow: Flow, args: Mapping[str, Any], emit: Emit, plan: Callable[[], RestorePlan]) -> Any:
        mode = args.get("mode")
        if mode == "plan":
            return plan().to_json()
        if mode == "run":
            return self._run(plan(), args.get("plan_id"), emit)
        op = _text(args, "op", flow.command)
        if op is None or mode not in ("resume", "rollback", "attach"):
            raise UsageError(f"{flow.command}: unknown mode {mode!r} (plan, run, resume, rollback, attach)")
        self._check_flow(op, flow)
        if mode == "resume":
            return to_json(self.restores.resume(op, emit))
        if mode == "attach":
            return to_json(self.restores.attach(op, emit))
        return self._rollback(op, emit)

    def _check_flow(self, op: str, flow: Flow) -> None:
        operation = self.restores.journals.open(op)
        if operation.flow is not flow:
            raise UsageError(f"operation {op} is a {operation.flow.name}, not a {flow.name}: use "
                             f"`etcdguardctl {operation.flow.command}` for it")

    def _run(self, plan: RestorePlan, wanted: Any, emit: Emit) -> dict[str, Any]:
        command = REPLACE.command if plan.flow == REPLACE.name else DEFRAG.command
        if plan.blocking:
            reasons = "\n".join(f"  - {(r.member + ': ') if r.member else ''}{r.message}" for r in plan.blocking)
            raise UnsafeRefusal(f"{command} refused, nothing was changed:\n{reasons}")
        if wanted is not None and wanted != plan.plan_id:
            raise UnsafeRefusal(f"refused: plan {wanted} is not the plan for the cluster as it is now "
                                f"({plan.plan_id}); something changed since it was reviewed. Look at the new plan "
                                "with --plan")
        summary: Summary = self.restores.launch(plan, emit)
        data: dict[str, Any] = to_json(summary)
        return data

    def _rollback(self, op: str, emit: Emit) -> dict[str, Any]:
        operation = self.restores.journals.open(op)
        if not operation.flow.rollback_possible(operation.reached()):
            seen = next(n for n in operation.reached() if operation.flow.step(n).clients_see)
            raise UnsafeRefusal(f"{operation.flow.name} {op} reached {seen}: the member was removed from etcd's "
                                "member list, and its old id cannot come back; finish the replacement with "
                                f"`etcdguardctl {operation.flow.command} --resume {op}`")
        return self.restores.rollback(op, emit, yes=True)
