"""Build the node's runtime (etcd and kube-apiserver services) from config and discovery.

Explicit config wins over what discovery found. Each service gets its stop
proof here: etcd's client ports closed and its bbolt file lockable; the
apiserver's port closed (from ``health_url`` or the command's
``--secure-port``/``--bind-address``) and, for a static pod, no process
running the manifest's command.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from etcdguard.agent.config import AgentConfig, ApiserverSettings
from etcdguard.agent.discovery.goflags import apiserver_flags
from etcdguard.agent.discovery.manifests import ManifestError, load_pod, pod_command
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.runtime.base import NodeRuntime, Service
from etcdguard.agent.runtime.process import DEFAULT_KILL_GRACE, ProcessService
from etcdguard.agent.runtime.proof import (
    AllOf,
    EtcdMemberIdentity,
    PortsClosed,
    ProcessesGone,
    StopProof,
    etcd_proof,
)
from etcdguard.agent.runtime.static_pod import StaticPodService, park_dir
from etcdguard.agent.runtime.systemd import SystemdService
from etcdguard.common.base.addresses import LOOPBACK_V4, connect_host, format_host_port
from etcdguard.common.base.errors import ConfigError

log = logging.getLogger(__name__)

ETCD = "etcd"
APISERVER = "kube-apiserver"
APISERVER_DEFAULT_PORT = 6443
LOG_DIR = "logs"


# ---------------------------------------------------------------------------
# pure helpers


def apiserver_address(argv: Optional[Sequence[str]], health_url: Optional[str]) -> str:
    """Pure: the host:port (or URL) whose closing proves kube-apiserver stopped.

    ``health_url`` when given; else ``--bind-address``:``--secure-port`` from the
    command (kube-apiserver's defaults: all addresses, 6443), probed on loopback
    when it binds all addresses.
    """
    if health_url:
        return health_url
    flags = apiserver_flags(argv).values if argv else {}
    port = flags.get("secure-port") or str(APISERVER_DEFAULT_PORT)
    if not port.isdigit():
        raise ConfigError(f"kube-apiserver --secure-port={port!r} is not a port number; set apiserver.health_url")
    return format_host_port(connect_host(flags.get("bind-address") or LOOPBACK_V4), int(port))


def read_manifest_command(paths: Sequence[Path], container: str) -> Optional[list[str]]:
    """The ``container``'s command from the first manifest among ``paths`` that exists (live, then parked)."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read {path}: {reason}") from None
        try:
            return pod_command(load_pod(text), container)
        except ManifestError as exc:
            raise ConfigError(f"{path}: not a manifest etcdguard can read: {exc}") from None
    return None


# ---------------------------------------------------------------------------
# building


def make_runtime(
    config: AgentConfig,
    member: LocalMember,
    state_dir: Path,
    systemctl: str = "systemctl",
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> NodeRuntime:
    """The etcd service (and kube-apiserver when configured) for this node."""
    state_dir = Path(state_dir)
    return NodeRuntime(
        etcd=_etcd_service(config, member, state_dir, systemctl, kill_grace),
        apiserver=(_apiserver_service(config.apiserver, state_dir, systemctl, kill_grace)
                   if config.apiserver is not None else None),
    )


def _etcd_service(config: AgentConfig, member: LocalMember, state_dir: Path, systemctl: str,
                  kill_grace: float) -> Service:
    s = config.etcd
    runtime = s.runtime or member.runtime
    if runtime is None:
        runtime = ("process" if s.start_command else "static-pod" if (s.manifest or member.manifest)
                   else "systemd" if (s.unit or member.unit) else None)
    if not member.endpoints:
        raise ConfigError(f"{config.source}: no etcd client URL known; set etcd.endpoints")
    try:
        proof = etcd_proof(member.endpoints, member.data_dir)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: etcd endpoints cannot be probed: {exc}") from None
    if runtime == "static-pod":
        manifest = s.manifest or member.manifest
        if manifest is None:
            raise ConfigError(f"{config.source}: etcd runs as a static pod but no manifest is known; set etcd.manifest")
        return StaticPodService(ETCD, manifest, park_dir(state_dir), proof)
    if runtime == "systemd":
        return SystemdService(ETCD, s.unit or member.unit or "etcd.service", proof, systemctl=systemctl)
    if runtime == "process":
        if not s.start_command or s.pid_file is None:
            raise ConfigError(f"{config.source}: the process runtime needs etcd.start_command and etcd.pid_file")
        return ProcessService(ETCD, s.start_command, s.pid_file, state_dir / LOG_DIR / "etcd.log", proof,
                              kill_grace=kill_grace, identity=EtcdMemberIdentity(member.data_dir, s.start_command))
    raise ConfigError(
        f"{config.source}: cannot tell how etcd is run on this node; set etcd.runtime "
        "(static-pod, systemd or process) and its manifest, unit or start_command"
    )


def _apiserver_service(a: ApiserverSettings, state_dir: Path, systemctl: str, kill_grace: float) -> Service:
    try:
        if a.manifest is not None:
            parked = park_dir(state_dir)
            # after an interrupted restore the manifest may still be parked
            argv = read_manifest_command([a.manifest, parked / a.manifest.name], APISERVER)
            proofs: list[StopProof] = [PortsClosed((apiserver_address(argv, a.health_url),))]
            if argv:
                proofs.append(ProcessesGone(tuple(argv)))
            else:
                log.warning("%s: no manifest at %s (nor parked); proving stop by its port only", APISERVER,
                            a.manifest)
            return StaticPodService(APISERVER, a.manifest, parked, AllOf(tuple(proofs)))
        if a.unit is not None:
            proof = AllOf((PortsClosed((apiserver_address(None, a.health_url),)),))
            return SystemdService(APISERVER, a.unit, proof, systemctl=systemctl)
        if a.start_command is not None and a.pid_file is not None:
            proof = AllOf((PortsClosed((apiserver_address(a.start_command, a.health_url),)),))
            return ProcessService(APISERVER, a.start_command, a.pid_file,
                                  state_dir / LOG_DIR / "kube-apiserver.log", proof, kill_grace=kill_grace)
    except ValueError as exc:
        raise ConfigError(f"[apiserver]: {exc}") from None
    raise ConfigError("[apiserver] needs exactly one of manifest, unit or start_command (with pid_file)")


def make_restart_services(config: AgentConfig, state_dir: Path, systemctl: str = "systemctl",
                          kill_grace: float = DEFAULT_KILL_GRACE) -> list[Service]:
    """What [[restart]] names, restarted by restart-controllers after a cluster restore.

    A static pod is parked until no process runs the command of its container
    named like the manifest (else the one running that program), then put back; a
    unit is stopped until systemd says inactive, then started; a command is
    stopped by its pid file (proven gone) and started again.
    """
    out: list[Service] = []
    parked = park_dir(state_dir)
    for r in config.restart:
        name = r.label
        if r.manifest is not None:
            # the container named like the manifest (kubeadm: kube-scheduler.yaml runs kube-scheduler)
            argv = read_manifest_command([r.manifest, parked / r.manifest.name], name)
            if argv is None:
                raise ConfigError(f"[[restart]] {r.manifest}: no manifest there (nor parked in {parked})")
            out.append(StaticPodService(name, r.manifest, parked, AllOf((ProcessesGone(tuple(argv)),))))
        elif r.unit is not None:
            out.append(SystemdService(name, r.unit, AllOf(()), systemctl=systemctl))
        elif r.start_command is not None and r.pid_file is not None:
            out.append(ProcessService(name, r.start_command, r.pid_file, Path(state_dir) / LOG_DIR / f"{name}.log",
                                      AllOf((ProcessesGone(tuple(r.start_command)),)), kill_grace=kill_grace))
    return out
