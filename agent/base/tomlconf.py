"""Strict TOML reading for etcdguard's config files.

Every error names the file, the dotted key and what was expected, and unknown
keys are errors: a typo in a backup tool's config must not silently fall back
to a default.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.base.addresses import parse_host_port
from etcdguard.agent.base.durations import parse_duration
from etcdguard.agent.base.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: config file not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


class Table:
    """One TOML table being read; tracks which keys were consumed."""

    def __init__(self, source: str, name: str, data: Any) -> None:
        self.source = source
        self.name = name
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key}" if self.name else f"{self.source}: {key}"

    def error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self._where(key)}: expected {expected}, got {_show(self.data.get(key))}")

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: Optional[str] = None) -> Optional[str]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string")
        return value

    def choice(self, key: str, options: Sequence[str], default: Optional[str] = None) -> Optional[str]:
        value = self.text(key, default)
        if value is not None and value not in options:
            raise self.error(key, "one of " + ", ".join(repr(o) for o in options))
        return value

    def path(self, key: str, default: Optional[Path] = None) -> Optional[Path]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.error(key, "a path string")
        if not value.startswith("/"):
            raise self.error(key, "an absolute path")
        return Path(value)

    def integer(self, key: str, default: Optional[int] = None, minimum: int = 0) -> Optional[int]:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def duration(self, key: str, default: Optional[float] = None) -> Optional[float]:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, "a duration such as '90s', '15m' or '1h'")
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"{self._where(key)}: {exc}") from None
        if seconds <= 0:
            raise self.error(key, "a positive duration")
        return seconds

    def text_list(self, key: str) -> Optional[tuple[str, ...]]:
        value = self._get(key)
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.error(key, "a non-empty list of strings")
        return tuple(value)

    def listen(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """A HOST:PORT listen address, an IPv6 host in brackets (parsed as the server will parse it)."""
        value = self.text(key, default)
        if value is None:
            return None
        try:
            parse_host_port(value)
        except ValueError as exc:
            raise ConfigError(f"{self._where(key)}: expected HOST:PORT, e.g. '127.0.0.1:9479' or "
                              f"'[::1]:9479', got {value!r} ({exc})") from None
        return value

    def finish(self) -> None:
        """Reject keys nobody asked for (typos)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f"[{self.name}]" if self.name else "top level"
            raise ConfigError(
                f"{self.source}: unknown key(s) in {where}: {', '.join(unknown)}"
            )


def _kind(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return _kind(value)
    return f"{_kind(value)} {value!r}"
