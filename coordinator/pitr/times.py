"""A moment as an operator writes it (pure): RFC 3339 with a time zone, or a duration ago ("5m ago", "5m")."""

from __future__ import annotations

import datetime
import re

from etcdguard.common.base.durations import parse_duration
from etcdguard.common.base.errors import UsageError

_AGO = re.compile(r"^\s*(?P<d>[0-9][0-9.a-z]*)\s*(?:ago)?\s*$", re.IGNORECASE)


def parse_moment(text: str, now: float) -> float:
    """Unix seconds of ``text``; UsageError saying the accepted forms otherwise."""
    m = _AGO.match(text)
    if m is not None:
        try:
            return now - parse_duration(m.group("d"))
        except ValueError:
            pass
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(value.replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"{text!r} is not a time: give RFC 3339 with a time zone (2026-12-05T14:32:05Z, "
                         "2026-12-05T15:32:05+01:00) or a duration ago (90s, 5m ago, 1h30m ago)") from None
    if moment.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone: add one (Z for UTC, or an offset such as +01:00)")
    return moment.timestamp()
