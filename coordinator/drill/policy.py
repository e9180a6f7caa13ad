"""What to drill and when, as pure decisions over the config, the vault's listing and the last results.

- **Whether drills run** (``availability``): ``[drill] interval = "0"`` or
  ``enabled = false`` switch the schedule off; left unset, drills run
  wherever this host has a scratch etcd, and say in ``status`` why not
  where it has none; ``enabled = true`` wants them, so a host without one is
  an error shown in ``status`` and, through ``etcdguard_drill_enabled``, an
  alert.
- **What** (``choose``): the newest scheduled or manual entry (what
  ``latest`` restores), and the newest point-in-time entry when the vault
  holds one.
- **When** (``first_due``, ``drill_now``): every interval from the last
  success (at once when none is within one interval); after a failed round,
  as soon as the vault holds a chosen entry with no drill yet (a new
  snapshot may be good where the old one was not).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.coordinator.config import DrillSettings
from etcdguard.coordinator.vault.entry import LATEST_KINDS, POINT_IN_TIME, VaultEntry, newest_first


@dataclass(frozen=True)
class Availability:
    """Whether scheduled drills are wanted, whether they can run here, and one sentence why."""

    wanted: bool      # the schedule is on (etcdguard_drill_enabled)
    runnable: bool    # a scratch etcd is there to run them
    sentence: str

    @property
    def scheduled(self) -> bool:
        return self.wanted and self.runnable


def availability(settings: DrillSettings, problem: Optional[str], where: str = "") -> Availability:
    """``problem``: why no scratch etcd can run on this host (None: ``where`` names the one that can)."""
    if settings.interval <= 0:
        return Availability(False, problem is None, 'off: [drill] interval = "0" (etcdguardctl drill still works)')
    if settings.enabled is False:
        return Availability(False, problem is None, "off: [drill] enabled = false (etcdguardctl drill still works)")
    if problem is not None:
        if settings.enabled:
            return Availability(True, False, f"CANNOT RUN ([drill] enabled = true): {problem}")
        return Availability(False, False, f"off: no scratch etcd on this host ({problem}); install one or set "
                                          "[scratch] etcd to switch drills on")
    return Availability(True, True, f"on, with {where}" if where else "on")


def choose(entries: Sequence[VaultEntry]) -> list[VaultEntry]:
    """The entries a scheduled drill (and ``etcdguardctl drill`` without an id) proves: the newest
    scheduled or manual one and the newest point-in-time one, each where the vault holds one."""
    ordered = newest_first(entries)
    picked = [next((e for e in ordered if e.kind in LATEST_KINDS), None),
              next((e for e in ordered if e.kind == POINT_IN_TIME), None)]
    return [e for e in picked if e is not None]


def first_due(last_success_at: Optional[float], interval: float, wall_now: float, mono_now: float) -> float:
    """When the first scheduled drill is due, on the monotonic clock: at once when no drill succeeded within
    one interval (or the last success is stamped in the future), else one interval after it."""
    if last_success_at is None or last_success_at > wall_now or wall_now - last_success_at >= interval:
        return mono_now
    return mono_now + (last_success_at + interval - wall_now)


def drill_now(chosen: Sequence[VaultEntry], drilled: Collection[str], last_round_failed: bool) -> bool:
    """After a failed round, a chosen entry that was never drilled is drilled at once."""
    return last_round_failed and any(e.sha256 not in drilled for e in chosen)
