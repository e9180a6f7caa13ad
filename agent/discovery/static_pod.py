"""The static-pod reader: etcd's settings from its kubeadm manifest.

The etcd container's command line and its literal ``ETCD_*`` env values are
etcd's settings; container paths map to host paths through the pod's
hostPath volumes. While a restore has the manifest parked (the static-pod
runtime moves it into the agent's state dir), the parked copy is read, so
resume and rollback still find the member.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.found import Found, env_settings
from etcdguard.agent.discovery.goflags import etcd_flags
from etcdguard.agent.discovery.manifests import container_argv, container_env, find_container, host_path
from etcdguard.agent.discovery.nodefiles import load_pod_file, under
from etcdguard.agent.runtime.static_pod import park_dir
from etcdguard.common.base.errors import DiscoveryError

DEFAULT_MANIFEST = Path("/etc/kubernetes/manifests/etcd.yaml")
_HINT = "set etcd.manifest (or etcd.runtime)"


def parked_manifest(config: AgentConfig, manifest: Path) -> Path:
    """Where the static-pod runtime keeps ``manifest`` while etcd is stopped for a restore."""
    return park_dir(config.state.dir) / manifest.name


def manifest_present(config: AgentConfig, root: Path, manifest: Path) -> bool:
    """In place, or parked by an interrupted restore (so resume and rollback still find the member).

    A user who may not look into the agent's state dir (not root) sees no parked manifest; `check`
    reports that dir as a problem of its own.
    """
    if under(root, manifest).is_file():
        return True
    try:
        return under(root, parked_manifest(config, manifest)).is_file()
    except PermissionError:
        return False


def read_static_pod(config: AgentConfig, root: Path, manifest: Path, origin: str) -> Found:
    """etcd's settings from ``manifest``, or from its parked copy while a restore has it parked."""
    if under(root, manifest).is_file():
        return read_manifest(manifest, root, origin)
    return dataclasses.replace(read_manifest(parked_manifest(config, manifest), root, origin), manifest=manifest)


def read_manifest(manifest: Path, root: Path, origin: str) -> Found:
    """etcd's settings from one manifest file: the etcd container's env, then its flags over them."""
    pod = load_pod_file(root, manifest, _HINT)
    container = find_container(pod, "etcd")
    if container is None:
        raise DiscoveryError(
            f"static-pod manifest {manifest} has no etcd container (none is named 'etcd' "
            f"or runs an etcd command); {_HINT}"
        )
    try:
        flags = etcd_flags(container_argv(container))
    except ValueError as exc:  # ManifestError, FlagError
        raise DiscoveryError(f"static-pod manifest {manifest}: {exc}; {_HINT}") from None
    source = f"manifest:{manifest}"
    settings = env_settings({var: (value, source) for var, value in container_env(container).items()})
    settings.update((flag, (value, source)) for flag, value in flags.values.items())
    image = container.get("image")
    return Found(
        runtime="static-pod", origin=origin, where=f"static-pod manifest {manifest}",
        settings=settings, to_host=lambda p: host_path(pod, container, p), manifest=manifest,
        image=image if isinstance(image, str) else None,
    )

