"""Warm standby, the coordinator's side: which prepared copy the members keep, and when a plan uses it.

With ``[restore] warm_standby``, after the vault's newest snapshot is on every
member (pre-staging), each agent is asked to restore it ahead into a warm
data dir (agent/restore/warm.py) with the parameters a restore of it would
use now: the full initial cluster, the configured revision bump, and one
token chosen here for it. The choice is kept in ``<state_dir>/warm.json``.
A plan for that snapshot whose initial cluster is still that takes that token
and that bump (any bump at least the one needed is as safe: warm_bump), and
each member holding the warm copy prepares by a rename.

A token is used by at most one restore: once a plan with it runs, the next
warm copy gets a new one, so no two restores ever share a cluster token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.common.ops.cluster_plan import RestorePlan

STATE = "warm.json"


@dataclass(frozen=True)
class WarmChoice:
    """The warm copy the members are asked to keep."""

    sha256: str
    token: str
    initial_cluster: str
    bump_revision: int
    consumed_by: Optional[str] = None      # the restore that used this token


class WarmState:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE

    def read(self) -> Optional[WarmChoice]:
        try:
            data = json.loads(self.path.read_text())
            return WarmChoice(**{k: data[k] for k in WarmChoice.__dataclass_fields__ if k in data})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, choice: WarmChoice) -> None:
        fsutil.ensure_private_dir(self.path.parent)
        fsutil.atomic_write_json(self.path, asdict(choice))

    def choose(self, sha256: str, initial_cluster: str, needed_bump: int, configured_bump: int) -> WarmChoice:
        """The current choice when it still fits (its bump at least the one needed now), else a new one with
        a fresh token (written). See ``warm_bump`` for the bump a new one gets."""
        current = self.read()
        if (current is not None and current.consumed_by is None and current.sha256 == sha256
                and current.initial_cluster == initial_cluster and current.bump_revision >= needed_bump):
            return current
        choice = WarmChoice(sha256, f"etcdguard-warm-{sha256[:12]}-{secrets.token_hex(3)}", initial_cluster,
                            warm_bump(needed_bump, configured_bump))
        self.write(choice)
        return choice

    def consumed(self, token: str, op: str) -> None:
        current = self.read()
        if current is not None and current.token == token and current.consumed_by is None:
            self.write(replace(current, consumed_by=op))


def warm_bump(needed: int, configured: int) -> int:
    """Pure: the bump a new warm copy is restored with.

    Normally the one needed now is the configured one, and it stays so while the live revision is
    less than the snapshot's plus that. Once the live store is already past it (restores of older
    snapshots), the needed bump grows with every write: the copy then gets twice the configured
    bump of headroom, so it stays adoptable (a larger bump is as safe) while the live revision grows
    by up to that much."""
    if needed <= configured:
        return needed
    return needed + 2 * configured


def usable_bump(choice: Optional[WarmChoice], sha256: str) -> int:
    """Pure: the bump a plan of ``sha256`` should take at least so that the warm copy fits it (0: none)."""
    if choice is None or choice.consumed_by is not None or choice.sha256 != sha256:
        return 0
    return choice.bump_revision


def holders(plan: RestorePlan, choice: WarmChoice, listings: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """Pure: the members whose ``snapshot.list`` reply shows the warm copy this plan can adopt."""
    out = []
    for m in plan.members:
        for w in listings.get(m.member, {}).get("warm") or []:
            if (isinstance(w, dict) and w.get("token") == choice.token and w.get("sha256") == plan.restored.id
                    and w.get("name") == m.member and w.get("peer_url") == m.peer_url
                    and w.get("initial_cluster") == plan.initial_cluster
                    and w.get("bump_revision") == plan.bump_revision and w.get("wal") == bool(m.wal_dir)):
                out.append(m.member)
                break
    return tuple(out)


def adopt_in_plan(plan: RestorePlan, choice: Optional[WarmChoice],
                  listings: Mapping[str, Mapping[str, Any]]) -> RestorePlan:
    """The plan with the warm token, when the warm copy fits it and some member holds it (pure)."""
    if (choice is None or choice.consumed_by is not None or plan.snapshot is None
            or choice.sha256 != plan.snapshot.id
            or choice.initial_cluster != plan.initial_cluster or choice.bump_revision != plan.bump_revision):
        return plan
    ready = holders(plan, choice, listings)
    return replace(plan, token=choice.token, warm=ready) if ready else plan


def warm_initial_cluster(names: Sequence[str], peer_urls: Mapping[str, Optional[str]]) -> Optional[str]:
    """The initial cluster a restore would use now, or None while a peer URL is unknown (pure)."""
    parts = []
    for name in names:
        url = peer_urls.get(name)
        if not url:
            return None
        parts.append(f"{name}={url}")
    return ",".join(parts)
