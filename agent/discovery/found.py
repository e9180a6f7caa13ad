"""etcd's settings as one runtime describes them, before explicit config and defaults apply.

Every reader (static pod, systemd unit, start command) yields one `Found`:
etcd's flag name -> (value, where it came from), read the way etcd reads them
(flags win over ``ETCD_*`` variables, ``--config-file`` replaces both), and how
a path among them maps to a host path. The assembly (discover.py) only asks a
`Found`; it never knows which reader made it.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import DiscoveryError

Settings = dict[str, tuple[str, str]]  # etcd flag name -> (value, source)


def env_flag(variable: str) -> Optional[str]:
    """The etcd flag an ``ETCD_*`` variable sets (etcd maps ``--data-dir`` to ``ETCD_DATA_DIR``)."""
    if variable.startswith("ETCD_") and len(variable) > 5:
        return variable[5:].lower().replace("_", "-")
    return None


def env_settings(env: Mapping[str, tuple[str, str]]) -> Settings:
    """The settings that ``ETCD_*`` variables (name -> (value, source)) make; other variables are ignored."""
    out: Settings = {}
    for var, (value, source) in env.items():
        flag = env_flag(var)
        if flag:
            out[flag] = (value, source)
    return out


def config_file_settings(doc: Mapping[str, Any], source: str) -> Settings:
    """Settings from etcd's YAML ``--config-file`` (its keys are the flag names)."""
    out: Settings = {}
    for key, value in doc.items():
        if key in ("client-transport-security", "peer-transport-security") and isinstance(value, dict):
            prefix = "peer-" if key.startswith("peer") else ""
            for sub, v in value.items():
                if isinstance(v, (str, int, bool)):
                    out[prefix + sub] = (_text(v), source)
        elif isinstance(value, (str, int, bool)):
            out[key] = (_text(value), source)
    return out


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def absolute_only(why: str) -> Callable[[str], str]:
    """A path mapping for a runtime without a working directory: absolute paths only, ``why`` otherwise."""

    def to_host(path: str) -> str:
        if not path.startswith("/"):
            raise LookupError(why)
        return posixpath.normpath(path)

    return to_host


@dataclasses.dataclass(frozen=True)
class Found:
    """etcd's settings as one runtime describes them, before config and defaults apply."""

    runtime: Optional[str]
    origin: str  # source of the runtime itself
    where: str  # for messages: "static-pod manifest /etc/kubernetes/manifests/etcd.yaml"
    settings: Settings
    to_host: Callable[[str], str]  # raises LookupError(why) when a path cannot be mapped
    manifest: Optional[Path] = None
    unit: Optional[str] = None
    image: Optional[str] = None
    workdir: Optional[str] = None  # where a relative data dir lives (systemd WorkingDirectory=)

    def value(self, flag: str) -> str:
        """The flag's value, "" when it is not set (etcd treats an empty value as unset too)."""
        return self.settings.get(flag, ("", ""))[0]

    def source(self, flag: str) -> str:
        return self.settings[flag][1]

    def host_path(self, flag: str, hint: str) -> Path:
        """The flag's path on the host; DiscoveryError naming the flag, its source and ``hint`` if unmappable."""
        value, source = self.settings[flag]
        try:
            return Path(self.to_host(value))
        except LookupError as exc:
            raise DiscoveryError(f"{self.where}: --{flag}={value} (from {source}) {exc}; {hint}") from None

    def maybe_host_path(self, flag: str) -> Optional[Path]:
        """The flag's host path, None when unset or unmappable (for facts that are only informational)."""
        try:
            return Path(self.to_host(self.value(flag))) if self.value(flag) else None
        except LookupError:
            return None
