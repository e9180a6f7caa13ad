"""Check results (Barman's `check` style) both daemons' `check` commands print: a typed
list of (name, ok, detail, hint); a check never changes anything."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    warning: bool = False   # ok, but worth a look (does not fail `check`)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint, "warning": self.warning}


def readable_problem(path: Path) -> Optional[str]:
    try:
        if not path.exists():
            return "does not exist"
    except PermissionError:
        return "cannot be looked at by this user (permission denied on a directory above it)"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def writable_dir(path: Path) -> tuple[bool, str]:
    """Can this user create files in ``path`` (or create ``path`` in its nearest existing parent)?"""
    probe = path
    try:
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        is_dir = probe.is_dir()
    except PermissionError:
        return False, f"{probe} cannot be looked into by this user (permission denied)"
    if not is_dir:
        return False, f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return False, f"{probe} is not writable by this user"
    return True, (f"{path} writable" if probe == path else f"{path} will be created in {probe}")



def render_checks(results: list[CheckResult]) -> list[str]:
    """The results as `check` prints them: one line each, a hint under a problem or a warning."""
    lines = ["checks"]
    for r in results:
        lines.append(f"  {'FAIL' if not r.ok else 'WARN' if r.warning else 'ok  '} {r.name}: {r.detail}")
        if r.hint and (not r.ok or r.warning):
            lines.append(f"         hint: {r.hint}")
    problems = sum(1 for r in results if not r.ok)
    lines.append(f"{problems} problem(s)" if problems else "all checks passed")
    return lines
