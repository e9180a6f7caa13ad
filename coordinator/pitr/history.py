"""``etcdguardctl history PREFIX``: the captured changes under a key prefix, to find the moment to go back to.

The segments whose time range (in their names) meets the asked one are read
and filtered (scan.py); the newest ``limit`` changes are returned, with the
window, so "namespace prod deleted at revision 88211, 14:32:05" and what
``restore --to-revision 88210`` can reach show together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from etcdguard.common.base.errors import UsageError
from etcdguard.coordinator.pitr.scan import changes
from etcdguard.coordinator.pitr.window import gaps, spans
from etcdguard.coordinator.vault.store import Vault

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


def _moment(args: Mapping[str, Any], key: str) -> Optional[float]:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"history: {key!r} must be unix seconds")
    return float(value)


def history(vault: Vault, args: Mapping[str, Any]) -> dict[str, Any]:
    prefix = args.get("prefix")
    if not isinstance(prefix, str):
        raise UsageError("history: give a key PREFIX ('/' for every key)")
    limit = args.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"history: --limit is a number from 1 to {MAX_LIMIT}")
    since, until = _moment(args, "since"), _moment(args, "until")
    if since is not None and until is not None and until < since:
        raise UsageError("history: --until is before --since")
    since_ms = int(since * 1000) if since is not None else None
    until_ms = int(until * 1000) if until is not None else None
    stored = [s for s in vault.segments.catalog.view() if not s.info.gap
              and (since_ms is None or s.info.last_ms >= since_ms)
              and (until_ms is None or s.info.first_ms <= until_ms)]
    found, cut = changes((vault.segments.read(s) for s in stored), prefix.encode(), since_ms, until_ms, limit)
    entries = list(vault.catalog.view().entries)
    segments = vault.segments.catalog.view()
    return {"prefix": prefix, "since": since, "until": until, "changes": [c.to_json() for c in found],
            "truncated": cut, "segments_read": len(stored), "window": [s.to_json() for s in spans(entries, segments)],
            "gaps": [g.to_json() for g in gaps(segments)]}
