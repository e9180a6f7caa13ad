"""What ``etcdguardctl status`` and ``etcdguardctl restores`` report, assembled from the daemon's parts.

The agents' views, the vault's listing and the restore journals are read by
the caller's parts; this module only shapes them into the reply, so the
field names operators and scripts read are kept in one place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from etcdguard.common import __version__
from etcdguard.common.base import schedule
from etcdguard.coordinator.agents.quorum import cluster_quorum, member_state
from etcdguard.coordinator.agents.view import MemberView, cluster_summary, member_row
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.restore.orphans import orphans
from etcdguard.coordinator.restore.service import RestoreService
from etcdguard.coordinator.vault.store import Vault, VaultBackendError

WAITING = ("interrupted", "paused", "needs-attention")   # restore states that wait for the operator


def status_report(*, views: Sequence[MemberView], vault: Vault, config: CoordinatorConfig,
                  restores: RestoreService, busy: Optional[str], next_pull_in: Optional[float],
                  last_pull: Optional[dict[str, Any]], prestage: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The reply to ``status``: members, cluster, vault, restores and the coordinator itself.

    Each member's ``state`` and the cluster's ``quorum`` count only what the
    agents measured within the last few seconds (coordinator/agents/quorum.py)."""
    now = time.time()
    return {
        "members": [{**member_row(v, now), "state": member_state(v).value} for v in views],
        "cluster": {**cluster_summary(views), "quorum": cluster_quorum(views).to_json()},
        "vault": {**vault_status(vault, config, now), "prestage": prestage},
        "restores": restore_status(restores, views),
        "coordinator": {
            "version": __version__,
            "busy": busy,
            "next_pull_in_seconds": next_pull_in,
            "last_pull": last_pull,
            "insecure": config.coordinator.insecure,
        },
    }


def vault_status(vault: Vault, config: CoordinatorConfig, now: float) -> dict[str, Any]:
    """The vault's part of ``status``; a backend that cannot be listed shows as ``error``."""
    vault_error = None
    try:
        entries = vault.list()
    except VaultBackendError as exc:
        entries, vault_error = [], str(exc)
    newest = entries[0] if entries else None
    return {
        "dir": vault.location,
        "backend": vault.backend,
        "encrypted": vault.encrypted,
        "error": vault_error,
        "count": len(entries),
        "bytes": sum(e.size for e in entries),
        "keep": config.vault.keep,
        "interval_seconds": config.vault.interval,
        "newest": newest.to_json() if newest else None,
        "newest_age_seconds": schedule.age_of(newest.created_unix, now) if newest else None,
    }


def restore_status(restores: RestoreService, views: Sequence[MemberView] = ()) -> dict[str, Any]:
    """The running restore, every one that waits for the operator (interrupted, paused, ...), and the ones
    only the agents know (a coordinator before this one ran them)."""
    active = restores.active()
    waiting = [{"op": r.op, "state": r.state.value, "phase": r.reached()[-1] if r.reached() else None,
                "error": r.error, "command": r.flow.command} for r in restores.records() if r.state.value in WAITING]
    commands = {r.op: r.flow.command for r in restores.records()}
    running = {"op": active[0], "doing": active[1], "command": commands.get(active[0], "restore")} if active else None
    return {"running": running, "waiting": waiting,
            "damaged": [f"{op}: {why}" for op, why in restores.journals.damaged()],
            "orphaned": [{"op": op, "members": members}
                         for op, members in orphans(views, restores.journals.ids()).items()]}


def restores_report(restores: RestoreService, views: Sequence[MemberView] = ()) -> list[dict[str, Any]]:
    """The reply to ``restores``: every journaled operation, a row for each journal that cannot be read, and
    one for each operation only the agents know."""
    return ([r.to_json() for r in restores.records()]
            + [damaged_row(op, why) for op, why in restores.journals.damaged()]
            + [orphan_row(op, members) for op, members in orphans(views, restores.journals.ids()).items()])


def orphan_row(op: str, members: list[str]) -> dict[str, Any]:
    """An operation open on agents with no journal here, as a row of `etcdguardctl restores` (``orphaned``)."""
    return {**damaged_row(op, ""), "state": "orphaned", "members": members,
            "error": f"open on {', '.join(members)}, no journal on this coordinator: end it with "
                     f"`etcdguardctl restore --rollback {op}`"}


def damaged_row(op: str, why: str) -> dict[str, Any]:
    """A journal that cannot be read, as a row of `etcdguardctl restores` (state ``damaged``)."""
    return {"op": op, "state": "damaged", "error": why, "plan_id": None, "kind": None, "snapshot": None,
            "created_at": None, "ended_at": None, "until": None, "failed_phase": None, "phases": {},
            "reverts": {}, "facts": {}, "members": []}
