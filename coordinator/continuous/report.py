"""What ``status`` and ``snapshots`` say of continuous backup: the capture now, and the restorable window.

The window comes from the vault's listing alone (pitr/window.py); its end,
for the cluster being captured, is when the vault last held every change
(the capture's lag), so an idle cluster shows "to 2 s ago", not the time of
its last write.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.base.durations import iso_utc
from etcdguard.coordinator.continuous.capture import Capture
from etcdguard.coordinator.pitr.window import Span, gaps, spans
from etcdguard.coordinator.vault.store import Vault


def window_json(found: list[Span], live_cluster: Optional[str], caught_up: Optional[float]) -> list[dict[str, Any]]:
    out = []
    live = [s for s in found if s.cluster_id == live_cluster]
    for s in found:
        data = s.to_json()
        if live and s is live[-1] and caught_up is not None and caught_up > s.last_unix:
            data.update(last_at=iso_utc(caught_up), last_unix=caught_up, live=True)
        out.append(data)
    return out


def continuous_report(capture: Capture, vault: Vault, enabled: bool, flush: float, now: float) -> dict[str, Any]:
    state = capture.state
    entries = list(vault.catalog.view().entries)
    segments = vault.segments.catalog.view()
    caught_up = capture.sync.caught_up_at if state.running else None
    return {
        "enabled": enabled,
        "running": state.running,
        "member": state.member,
        "cluster_id": state.cluster_id or None,
        "doing": state.sentence,
        "received_revision": state.received or None,
        "written_revision": state.written or None,
        "lag_seconds": capture.lag() if enabled else None,
        "flush_seconds": flush,
        "error": state.error,
        "error_at": state.error_at,
        "gaps_recorded": state.gaps,
        "segments": len(segments),
        "segment_bytes": sum(s.size for s in segments),
        "segments_listed": vault.segments.catalog.known,
        "window": window_json(spans(entries, segments), state.cluster_id or None, caught_up),
        "gaps": [g.to_json() for g in gaps(segments)],
        "now": now,
    }
