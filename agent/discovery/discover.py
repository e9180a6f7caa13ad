"""Discovery: how etcd runs on this node, worked out into one `LocalMember`.

etcd is found as a kubeadm static pod (its manifest), a systemd service (the
unit, its drop-ins and environment files) or a configured start command, in
that order unless ``etcd.runtime`` says which (detect.py). Each reader
(static_pod.py, systemd.py, explicit.py) yields etcd's own settings as a
`Found`: flag name -> value and where it came from, read the way etcd reads
them: flags win over ``ETCD_*`` variables, and ``--config-file`` replaces
both. This module is the assembly: it applies explicit config (which always
wins), maps container paths to host paths, picks the client certificate
(client_tls.py) and fills the few safe defaults. Parsing is pure over text
(systemd_unit.py, manifests.py, goflags.py); only the readers touch files.

``root`` only redirects reading, so tests can use a fake tree: every path in
the result is the real absolute path on the node, without the root prefix.

``LocalMember.sources`` records per field where the value came from:
``config``, ``manifest:<path>``, ``unit:<path>``, ``env:<path>`` (an
EnvironmentFile), ``config-file:<path>`` (etcd's ``--config-file``),
``start_command``, ``kubeadm:<path>`` (the healthcheck-client pair next to the
CA) or ``default``; a last-resort choice says ``(fallback: ...)``.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Optional, TypeVar

from etcdguard.agent.config import AgentConfig, EtcdSettings
from etcdguard.agent.discovery.client_tls import client_tls
from etcdguard.agent.discovery.detect import detect
from etcdguard.agent.discovery.explicit import explicit_only, read_start_command
from etcdguard.agent.discovery.found import Found, config_file_settings
from etcdguard.agent.discovery.member import ClientTLS, LocalMember, prefer_local
from etcdguard.agent.discovery.nodefiles import load_yaml_file
from etcdguard.agent.discovery.static_pod import DEFAULT_MANIFEST, read_static_pod
from etcdguard.agent.discovery.systemd import read_systemd
from etcdguard.common.base.addresses import parse_initial_cluster, parse_url
from etcdguard.common.base.errors import DiscoveryError

APISERVER_MANIFEST_NAME = "kube-apiserver.yaml"
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"

Sources = list[tuple[str, str]]
_T = TypeVar("_T")


def discover(config: AgentConfig, root: Path = Path("/"), *, hostname: Optional[str] = None) -> LocalMember:
    """Work out the local member; explicit config keys always win over what is found.

    ``root`` redirects every read (tests pass a fake tree); paths in the result
    are the node's real paths. ``hostname`` stands in for the node's host name
    where a unit uses systemd's %H specifier (default: the real one).
    """
    found = _with_config_file(_read(config, root, hostname), root)
    return _assemble(config, found, root, _apiserver_manifest(config, found))


def _read(config: AgentConfig, root: Path, hostname: Optional[str]) -> Found:
    """etcd's settings from the runtime that runs it here."""
    runtime, origin, artifact = detect(config, root)

    def host() -> str:
        return hostname if hostname is not None else socket.gethostname()

    if runtime == "static-pod" and artifact is not None:
        return read_static_pod(config, root, artifact, origin)
    if runtime == "systemd" and artifact is not None:
        return read_systemd(config.etcd, root, artifact, origin, host)
    if runtime == "process":
        return read_start_command(config.etcd, origin, config.source)
    return explicit_only(config)


def _with_config_file(found: Found, root: Path) -> Found:
    """etcd ignores its other flags and ETCD_* variables when given --config-file."""
    if "config-file" not in found.settings:
        return found
    raw, source = found.settings["config-file"]
    hint = "set etcd.name, etcd.data_dir and etcd.endpoints explicitly"
    try:
        path = Path(found.to_host(raw))
    except LookupError as exc:
        raise DiscoveryError(f"{found.where}: --config-file={raw} {exc} (from {source}); {hint}") from None
    doc = load_yaml_file(root, path, "etcd config file", hint)
    if not isinstance(doc, dict):
        raise DiscoveryError(f"etcd config file {path} is not a YAML mapping; {hint}")
    return dataclasses.replace(found, settings=config_file_settings(doc, f"config-file:{path}"))


def _apiserver_manifest(config: AgentConfig, found: Found) -> Path:
    """Where kube-apiserver's manifest is (its etcd client certificate may be the agent's)."""
    if config.apiserver is not None and config.apiserver.manifest is not None:
        return config.apiserver.manifest
    if found.manifest is not None:
        return found.manifest.parent / APISERVER_MANIFEST_NAME
    return DEFAULT_MANIFEST.parent / APISERVER_MANIFEST_NAME


def _assemble(config: AgentConfig, found: Found, root: Path, apiserver_manifest: Path) -> LocalMember:
    cfg = config.etcd
    sources: Sources = [("runtime", found.origin)]
    name = _pick(sources, "name", _member_name(cfg.name, found, _hint(config, "etcd.name")))
    data_dir = _pick(sources, "data_dir", _data_dir(config, found, name))
    endpoints = _pick(sources, "endpoints", _endpoints(cfg, found, _hint(config, "etcd.endpoints")))
    peer_url = _pick(sources, "peer_url", _peer_url(cfg, found))
    initial_cluster = _pick(sources, "initial_cluster", _initial_cluster(found))
    tls, tls_sources = client_tls(cfg, found, root, apiserver_manifest=apiserver_manifest,
                                  config_source=config.source)
    sources += tls_sources
    peer_tls = ClientTLS(
        cacert=found.maybe_host_path("peer-trusted-ca-file"),
        cert=found.maybe_host_path("peer-cert-file"),
        key=found.maybe_host_path("peer-key-file"),
    )
    server_tls = ClientTLS(
        cacert=found.maybe_host_path("trusted-ca-file"),
        cert=found.maybe_host_path("cert-file"),
        key=found.maybe_host_path("key-file"),
    )
    if found.image:
        sources.append(("image", f"manifest:{found.manifest}"))
    wal_dir = _pick(sources, "wal_dir", _wal_dir(config, found))
    quota = found.value("quota-backend-bytes")
    return LocalMember(
        name=name, data_dir=data_dir, endpoints=tuple(endpoints), peer_url=peer_url, tls=tls,
        runtime=found.runtime, manifest=found.manifest, unit=found.unit,
        initial_cluster=initial_cluster, image=found.image, peer_tls=peer_tls, wal_dir=wal_dir,
        quota_backend_bytes=int(quota) if quota.isdigit() and int(quota) > 0 else None, sources=tuple(sources),
        server_tls=server_tls,
    )


def _hint(config: AgentConfig, key: str) -> str:
    return f"set {key} in {config.source}"


def _pick(sources: Sources, field: str, picked: tuple[_T, Optional[str]]) -> _T:
    """The value of ``picked`` (value, source); its source is recorded unless there is none (unset)."""
    value, source = picked
    if source is not None:
        sources.append((field, source))
    return value


def _member_name(configured: Optional[str], found: Found, hint: str) -> tuple[str, str]:
    """(name, where it came from): never guessed (etcd itself would call an unnamed member "default")."""
    if configured:
        return configured, "config"
    if found.value("name"):
        return found.settings["name"]
    raise DiscoveryError(f"{found.where}: no member name (no --name or ETCD_NAME; etcd would use 'default'); "
                         + hint)


def _data_dir(config: AgentConfig, found: Found, name: str) -> tuple[Path, str]:
    if config.etcd.data_dir is not None:
        return config.etcd.data_dir, "config"
    if found.value("data-dir"):
        return found.host_path("data-dir", _hint(config, "etcd.data_dir")), found.source("data-dir")
    if found.workdir is not None:  # etcd's own default: ${name}.etcd in its working directory
        return Path(found.workdir) / f"{name}.etcd", "default"
    raise DiscoveryError(
        f"{found.where}: no data dir (no --data-dir or ETCD_DATA_DIR, and no working directory "
        f"for etcd's default '{name}.etcd'); " + _hint(config, "etcd.data_dir")
    )


def _peer_url(cfg: EtcdSettings, found: Found) -> tuple[Optional[str], Optional[str]]:
    """This member's peer URL: config, else the first --initial-advertise-peer-urls; (None, None) if neither."""
    if cfg.peer_url is not None:
        return cfg.peer_url, "config"
    if found.value("initial-advertise-peer-urls"):
        value, source = found.settings["initial-advertise-peer-urls"]
        return value.split(",")[0].strip(), source
    return None, None


def _initial_cluster(found: Found) -> tuple[Optional[str], Optional[str]]:
    """etcd's --initial-cluster as configured; a malformed one is refused here, where its file is known.

    The node-local restore counts its members to refuse splitting a member off
    a multi-member cluster, so a value that cannot be read is not passed on.
    """
    if not found.value("initial-cluster"):
        return None, None
    value, source = found.settings["initial-cluster"]
    try:
        parse_initial_cluster(value)
    except ValueError as exc:
        raise DiscoveryError(f"{found.where}: --initial-cluster={value} (from {source}): {exc}; "
                             "fix it there") from None
    return value, source


def _wal_dir(config: AgentConfig, found: Found) -> tuple[Optional[Path], Optional[str]]:
    if config.etcd.wal_dir is not None:
        return config.etcd.wal_dir, "config"
    if found.value("wal-dir"):
        return found.host_path("wal-dir", _hint(config, "etcd.wal_dir")), found.source("wal-dir")
    return None, None


def _endpoints(cfg: EtcdSettings, found: Found, hint: str) -> tuple[list[str], str]:
    if cfg.endpoints:
        return list(cfg.endpoints), "config"
    urls: list[str] = []
    origins: list[str] = []
    for flag in ("listen-client-urls", "advertise-client-urls"):
        if found.value(flag):
            value, source = found.settings[flag]
            urls += [u.strip() for u in value.split(",") if u.strip()]
            origins.append(source)
    if not origins:
        return [DEFAULT_ENDPOINT], "default"  # etcd's own default listener
    usable = [url for url in urls if _is_http_url(url)]  # not unix:// sockets and the like
    if not usable:
        raise DiscoveryError(f"{found.where}: no http(s) client URL among {', '.join(urls)}; {hint}")
    return prefer_local(usable), ", ".join(dict.fromkeys(origins))


def _is_http_url(url: str) -> bool:
    try:
        parse_url(url, default_port=2379)
    except ValueError:
        return False
    return True
