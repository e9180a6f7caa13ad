"""Human durations ("90s", "15m", "1h30m", "2d") for config files and output, and the one
timestamp format of every output: ISO 8601 UTC to the second, ``YYYY-MM-DDTHH:MM:SSZ``."""

from __future__ import annotations

import re
import time
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Return seconds for a duration string; raise ValueError naming the accepted form."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s):
        raise ValueError(
            f"{text!r} is not a duration; use a number with a unit, e.g. '90s', '15m', '1h', '1h30m', '2d'"
        )
    return total


def format_duration(seconds: float) -> str:
    """Short, readable rendering: 0.4s, 42s, 5m12s, 3h05m, 2d04h."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def format_bytes(n: float) -> str:
    """Binary units, one decimal: 512 B, 1.5 KiB, 300.0 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """Bytes for '100MiB', '1.5 GiB', '50MB', '4096'; ValueError naming the accepted form."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size; use a number with a unit, e.g. '64MiB', '1GiB', '500MB'")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


def iso_utc(unix: float) -> str:
    """``2026-12-01T09:57:40Z``: the format of every ``*_at`` field etcdguard writes or prints."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def stamp_times(value: Any) -> Any:
    """A copy of parsed JSON in which every ``*_at`` number (unix seconds, as operation records
    keep them) is an ISO 8601 UTC string, its number kept beside it as ``*_unix``."""
    if isinstance(value, list):
        return [stamp_times(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if (isinstance(key, str) and key.endswith("_at") and isinstance(item, (int, float))
                and not isinstance(item, bool)):
            out[key] = iso_utc(float(item))
            out.setdefault(f"{key[:-3]}_unix", item)
        else:
            out[key] = stamp_times(item)
    return out
