"""What ``etcdguardctl status``, ``snapshots`` and ``restores`` report, assembled from the daemon's parts.

The agents' views, the vault's catalog (its last listing: vault/catalog.py)
and the restore journals are read by the caller's parts; this module only
shapes them into the reply, so the field names operators and scripts read
are kept in one place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from etcdguard.common import __version__
from etcdguard.common.base import schedule
from etcdguard.common.base.durations import format_duration
from etcdguard.coordinator.agents.quorum import cluster_quorum, member_state
from etcdguard.coordinator.agents.view import MemberView, cluster_summary, member_row
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.restore.orphans import orphans
from etcdguard.coordinator.restore.service import RestoreService
from etcdguard.coordinator.vault.attempts import Copies
from etcdguard.coordinator.vault.catalog import FAILED, PENDING, Listing, summary
from etcdguard.coordinator.vault.store import Vault

WAITING = ("interrupted", "paused", "needs-attention")   # restore states that wait for the operator


def status_report(*, views: Sequence[MemberView], vault: Vault, listing: Listing, config: CoordinatorConfig,
                  restores: RestoreService, busy: Optional[str], next_pull_in: Optional[float],
                  copies: Copies, prestage: Optional[dict[str, Any]] = None,
                  continuous: Optional[dict[str, Any]] = None,
                  drills: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The reply to ``status``: members, cluster, vault, restores and the coordinator itself.

    Each member's ``state`` and the cluster's ``quorum`` count only what the
    agents measured within the last few seconds (coordinator/agents/quorum.py).
    ``coordinator.last_failure`` is the newest failed copy (backup or pull) until one succeeds; the next
    pull is then its retry (``next_pull_retries``)."""
    now = time.time()
    return {
        "members": [{**member_row(v, now), "state": member_state(v).value} for v in views],
        "cluster": {**cluster_summary(views), "quorum": cluster_quorum(views).to_json()},
        "vault": {**vault_status(vault, listing, config, now), "prestage": prestage},
        "restores": restore_status(restores, views),
        "continuous": continuous,
        "drills": drills,
        "coordinator": {
            "version": __version__,
            "busy": busy,
            "next_pull_in_seconds": next_pull_in,
            **copies.to_json(),
            "next_pull_retries": copies.failing is not None,
            "insecure": config.coordinator.insecure,
        },
    }


def vault_status(vault: Vault, listing: Listing, config: CoordinatorConfig, now: float) -> dict[str, Any]:
    """The vault's part of ``status``, from its last listing (``listing``: when, and how it went).

    A listing that failed shows as ``error`` beside what the last listing that
    answered held (``count``, ``bytes``, ``newest``); ``count`` and ``newest``
    are null while no listing has answered since the coordinator started: the
    contents are unknown then, not empty.
    """
    newest = listing.newest()
    count, size = summary(listing.entries)
    return {
        "dir": vault.location,
        "backend": vault.backend,
        "encrypted": vault.encrypted,
        "error": listing.error,
        "listing": listing.to_json(now),
        "offsite_confirmed_at": vault.seen_at if vault.backend != "dir" else None,
        "count": count if listing.known else None,
        "bytes": size if listing.known else None,
        "stored_bytes": sum(e.stored_size or e.size for e in listing.entries) if listing.known else None,
        "keep": config.vault.keep,
        "interval_seconds": config.vault.interval,
        "newest": newest.to_json() if newest else None,
        "newest_age_seconds": schedule.age_of(newest.created_unix, now) if newest else None,
    }


def snapshots_report(listing: Listing, location: str, now: float,
                     continuous: Optional[dict[str, Any]] = None,
                     drills: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, Any]:
    """The reply to ``snapshots``: the entries of the last listing, newest first, and that listing; each
    entry with its last restore drill (``drill``) and when a drill last proved it restorable (``proven_at``);
    with continuous backup, the restorable window too."""
    found = drills or {}
    entries = []
    for e in listing.entries:
        drill = found.get(e.sha256)
        proven = drill.get("proven_at") if drill else None
        entries.append({**e.to_json(), "drill": drill["last"] if drill else None, "proven_at": proven})
    return {"entries": entries, "location": location, "listing": listing.to_json(now), "continuous": continuous}


def vault_phrase(listing: Listing, now: float) -> str:
    """The vault in a few words for systemd's STATUS= line: never "empty" when that is not known."""
    newest = listing.newest()
    if listing.state == PENDING:
        return "vault not listed yet"
    if newest is not None:
        text = (f"vault newest {format_duration(max(0.0, now - newest.created_unix))} old "
                f"(from {newest.source_member}, revision {newest.revision})")
    else:
        text = "vault empty" if listing.known else "vault contents unknown"
    if listing.state == FAILED:
        text += "; vault listing failing"
    return text


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
