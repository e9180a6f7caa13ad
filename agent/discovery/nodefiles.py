"""Reading the node's files for discovery, below a root that tests redirect.

``root`` only redirects reading: a path given here is the node's real absolute
path, and the file read is the same path below ``root``. Every failure is a
DiscoveryError that names the file, what it was read as, and ``hint`` (the
config key that replaces what the file would have told).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etcdguard.agent.discovery.manifests import ManifestError, as_pod, load_yaml
from etcdguard.common.base.errors import DiscoveryError


def under(root: Path, path: Path) -> Path:
    """Where the node path ``path`` is read from."""
    return root / path.relative_to("/") if path.is_absolute() else root / path


def read_text(root: Path, path: Path, what: str, hint: str) -> str:
    try:
        return under(root, path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DiscoveryError(f"{what} {path} not found; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DiscoveryError(f"{what} {path} cannot be read ({reason}); {hint}") from None


def load_yaml_file(root: Path, path: Path, what: str, hint: str) -> Any:
    try:
        return load_yaml(read_text(root, path, what, hint))
    except ManifestError as exc:
        raise DiscoveryError(f"{what} {path} is not valid YAML ({exc}); {hint}") from None


def load_pod_file(root: Path, path: Path, hint: str) -> dict[str, Any]:
    try:
        return as_pod(load_yaml_file(root, path, "static-pod manifest", hint))
    except ManifestError as exc:
        raise DiscoveryError(f"static-pod manifest {path} is {exc}; {hint}") from None
