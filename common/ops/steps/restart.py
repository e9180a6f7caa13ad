"""restart-controllers: restart what each node names in [[restart]], so nothing serves pre-restore caches.

kube-controller-manager and kube-scheduler keep informer caches with the
revisions they saw before the restore; a restart makes them re-list.
"""

from __future__ import annotations

from typing import Any

from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import NodeServices
from etcdguard.common.ops.step import Step


class RestartControllers(Step):
    name = "restart-controllers"
    destructive = True
    clients_see = True
    on_failure = "report"

    def what(self, plan: RestorePlan) -> str:
        return "restart what each agent names in [[restart]] so nothing serves pre-restore caches"

    def per_member(self, plan: RestorePlan) -> tuple[tuple[str, str], ...]:
        return tuple((m.member, ", ".join(m.restart) if m.restart else "nothing configured") for m in plan.members)

    def execute(self, node: NodeServices, **options: Any) -> dict[str, Any]:
        restarted = []
        for service in node.restart_services():
            service.stop(node.stop_timeout)
            service.start(node.start_timeout)
            restarted.append(service.name)
        return {"restarted": restarted}


STEP = RestartControllers()
