"""Each vault entry's last drill, kept in the coordinator's state: what `status`, `snapshots` and the
metrics show after a restart.

One JSON file, ``<state_dir>/drills.json``, replaced atomically (temp +
fsync + rename) after every drill::

    {"format": 1, "last": RESULT, "last_success_at": UNIX,
     "entries": {sha256: {"last": RESULT, "proven_at": UNIX | null}}}

``proven_at`` is when that entry last passed a drill, so a later failure
shows beside the proof it had. A file that cannot be read is logged and
treated as empty (the next drill writes a good one): it holds nothing a drill
cannot find out again.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base import fsutil
from etcdguard.coordinator.drill.checks import DrillResult

log = logging.getLogger(__name__)

FILE_NAME = "drills.json"
FORMAT = 1
KEEP = 256        # entries remembered; the vault's retention removes older snapshots anyway


@dataclass(frozen=True)
class EntryDrills:
    """One entry's last drill and when it last passed one."""

    last: DrillResult
    proven_at: Optional[float]

    def to_json(self) -> dict[str, Any]:
        return {"last": self.last.to_json(), "proven_at": self.proven_at}


class DrillRecords:
    """The drills file of one coordinator; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.entries: dict[str, EntryDrills] = {}
        self.last: Optional[DrillResult] = None
        self.last_success_at: Optional[float] = None
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("format") != FORMAT:
                raise ValueError(f"not format {FORMAT}")
            entries = {str(sha): EntryDrills(DrillResult.from_json(e["last"]),
                                             float(e["proven_at"]) if e.get("proven_at") is not None else None)
                       for sha, e in dict(raw.get("entries") or {}).items()}
            last = DrillResult.from_json(raw["last"]) if raw.get("last") is not None else None
            success = float(raw["last_success_at"]) if raw.get("last_success_at") is not None else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("drills: cannot read %s (%s): starting with no drill results", self.path, exc)
            return
        self.entries, self.last, self.last_success_at = entries, last, success

    def record(self, result: DrillResult) -> None:
        """Remember ``result`` (and write the file); a write that fails is logged: the result still counts."""
        with self._lock:
            before = self.entries.get(result.sha256)
            proven = result.started_at if result.ok else (before.proven_at if before else None)
            self.entries[result.sha256] = EntryDrills(result, proven)
            self.last = result
            if result.ok:
                self.last_success_at = max(self.last_success_at or 0.0, result.started_at)
            oldest_first = sorted(self.entries, key=lambda s: self.entries[s].last.started_at)
            for sha in oldest_first[: max(0, len(oldest_first) - KEEP)]:
                del self.entries[sha]
            body = {"format": FORMAT, "last": self.last.to_json(), "last_success_at": self.last_success_at,
                    "entries": {sha: e.to_json() for sha, e in self.entries.items()}}
            try:
                fsutil.ensure_private_dir(self.path.parent)
                fsutil.atomic_write_json(self.path, body)
            except OSError as exc:
                log.error("drills: %s", fsutil.disk_error(f"cannot write {self.path}", exc))

    def of(self, sha256: str) -> Optional[EntryDrills]:
        with self._lock:
            return self.entries.get(sha256)

    def snapshot(self) -> dict[str, EntryDrills]:
        with self._lock:
            return dict(self.entries)
