"""Which runtime runs etcd here: what the config names, else the first of static pod, systemd, start command.

``etcd.runtime`` decides when set; without it an explicit ``etcd.manifest``
or ``etcd.unit``/``etcd.unit_file`` does, then whatever is found on the node
in that order. When nothing fits, the error names what was looked for and the
keys that would settle it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.static_pod import DEFAULT_MANIFEST, manifest_present
from etcdguard.agent.discovery.systemd import UNIT_DIRS, find_unit, unit_name
from etcdguard.common.base.errors import DiscoveryError

Detected = tuple[Optional[str], str, Optional[Path]]  # (runtime, its source, the manifest or unit file)


def detect(config: AgentConfig, root: Path) -> Detected:
    """(runtime, its source, the manifest or unit file); DiscoveryError when nothing fits."""
    cfg = config.etcd
    if cfg.runtime == "static-pod" or (cfg.runtime is None and cfg.manifest is not None):
        return _configured_static_pod(config, root)
    if cfg.runtime == "systemd" or (cfg.runtime is None and (cfg.unit or cfg.unit_file)):
        return _configured_systemd(config, root)
    if cfg.runtime == "process":
        return "process", "config", None
    return _found_on_node(config, root)


def _configured_static_pod(config: AgentConfig, root: Path) -> Detected:
    manifest = config.etcd.manifest or DEFAULT_MANIFEST
    if not manifest_present(config, root, manifest):
        raise DiscoveryError(
            f"static-pod manifest {manifest} not found; set etcd.manifest in {config.source} to the file "
            "kubelet runs etcd from (or set etcd.runtime)"
        )
    return "static-pod", "config" if config.etcd.runtime else f"manifest:{manifest}", manifest


def _configured_systemd(config: AgentConfig, root: Path) -> Detected:
    cfg = config.etcd
    unit_file = find_unit(cfg, root)
    if unit_file is None:
        looked = str(cfg.unit_file) if cfg.unit_file else ", ".join(str(d) for d in UNIT_DIRS)
        raise DiscoveryError(
            f"systemd unit {unit_name(cfg)} not found (looked in {looked}); "
            f"set etcd.unit or etcd.unit_file in {config.source} (or etcd.runtime)"
        )
    return "systemd", "config" if cfg.runtime else f"unit:{unit_file}", unit_file


def _found_on_node(config: AgentConfig, root: Path) -> Detected:
    """No runtime configured: a manifest, else a unit, else a start command, else explicit config alone."""
    cfg = config.etcd
    manifest = cfg.manifest or DEFAULT_MANIFEST
    if manifest_present(config, root, manifest):
        return "static-pod", f"manifest:{manifest}", manifest
    unit_file = find_unit(cfg, root)
    if unit_file is not None:
        return "systemd", f"unit:{unit_file}", unit_file
    if cfg.start_command:
        return "process", "start_command", None
    if cfg.name and cfg.data_dir:
        return None, "config", None  # explicit config only: etcd runs some way we do not manage
    raise DiscoveryError(
        f"cannot tell how etcd runs here: no static-pod manifest {manifest}, no systemd unit "
        f"{unit_name(cfg)} in {', '.join(str(d) for d in UNIT_DIRS)}, and no etcd.start_command; "
        f"set etcd.runtime in {config.source} with etcd.manifest, etcd.unit or etcd.start_command "
        "(or etcd.name and etcd.data_dir)"
    )
