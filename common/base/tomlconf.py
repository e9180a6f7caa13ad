"""Strict TOML reading for etcdguard's config files.

Every error names the file, the dotted key and what was expected, and unknown
keys are errors: a typo in a backup tool's config must not silently fall back
to a default. Whatever the file holds (bytes that are not UTF-8, a directory,
a FIFO, nesting deep enough to exhaust the parser's recursion), reading it
ends in a ConfigError, so a daemon keeps its running config on SIGHUP and a
command exits 2. Values are echoed cut to a few dozen characters: a 5 MB
value must not become a 5 MB log line.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.addresses import parse_host_port
from etcdguard.common.base.durations import parse_duration
from etcdguard.common.base.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib


MAX_CONFIG_BYTES = 16 << 20       # far above any real config; a bigger "config" is a mistake
MAX_DURATION = 10 * 365 * 86400.0  # ten years: longer waits overflow the timers they end up in
SHOW_CHARS = 60                    # how much of a bad value an error message quotes


def load_toml(path: Path) -> dict[str, Any]:
    """Parse ``path``; any file that is not a readable, UTF-8, valid TOML document is a ConfigError naming it."""
    return parse_toml(_read_config(path), path)


def _read_config(path: Path) -> bytes:
    """The file's bytes; refuses what is not a regular file (a FIFO would block, /dev/zero never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: config file not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: config file cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: is a directory, not a config file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); give the config file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes is not a config file (at most {MAX_CONFIG_BYTES})")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{path}: config file cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def parse_toml(raw: bytes, path: Path) -> dict[str, Any]:
    """Pure: the TOML document in ``raw``; every way it can be malformed is a ConfigError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}); "
                          "TOML files are UTF-8 text") from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {cut(str(exc), 200)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
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

    def size(self, key: str, default: Optional[int] = None) -> Optional[int]:
        """Bytes from '100MiB', '1GiB', '500MB' or a whole number of bytes."""
        from etcdguard.common.base.durations import parse_size

        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise self.error(key, "a size such as '100MiB' or a number of bytes")
        if isinstance(value, int):
            if value < 0:
                raise self.error(key, "a size >= 0")
            return value
        if not isinstance(value, str):
            raise self.error(key, "a size such as '100MiB' or a number of bytes")
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def duration(self, key: str, default: Optional[float] = None) -> Optional[float]:
        """Seconds from '90s', '15m', '1h30m' or a number; NaN, infinities and more than ten years are refused,
        since each would end in a timer that never fires or an OverflowError deep in the daemon's loop."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, "a duration such as '90s', '15m' or '1h'")
        if isinstance(value, (int, float)):
            try:
                seconds = float(value)
            except OverflowError:
                seconds = math.inf
        else:
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                if len(value) > SHOW_CHARS:   # the parser's message quotes the whole value
                    raise ConfigError(f"{self._where(key)}: {cut(repr(value))} is not a duration; use a number "
                                      "with a unit, e.g. '90s', '15m', '1h', '1h30m', '2d'") from None
                raise ConfigError(f"{self._where(key)}: {exc}") from None
        if math.isnan(seconds):
            raise self.error(key, "a duration such as '90s', '15m' or '1h' (not NaN)")
        if seconds <= 0:
            raise self.error(key, "a positive duration")
        if seconds > MAX_DURATION:
            raise self.error(key, "a finite duration of at most 3650d")
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
                              f"'[::1]:9479', got {_show(value)} ({cut(str(exc), 120)})") from None
        return value

    def finish(self) -> None:
        """Reject keys nobody asked for (typos)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f"[{self.name}]" if self.name else "top level"
            shown = ", ".join(cut(k, 40) for k in unknown[:10]) + (f" and {len(unknown) - 10} more"
                                                                    if len(unknown) > 10 else "")
            raise ConfigError(f"{self.source}: unknown key(s) in {where}: {shown}")


def _kind(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)


def cut(text: str, limit: int = SHOW_CHARS) -> str:
    """Pure: ``text``, or its start and how long it was when longer than ``limit``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return _kind(value)
    return f"{_kind(value)} {cut(repr(value))}"
