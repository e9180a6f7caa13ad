"""Which CA, certificate and key the agent connects to etcd with.

etcd's server certificate is not meant for clients. In order: explicit
config, kubeadm's healthcheck-client pair next to the CA, kube-apiserver's
etcd client certificate (from its manifest), and only then the server pair
(said so in the source: ``(fallback: etcd's server certificate)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from etcdguard.agent.config import EtcdSettings
from etcdguard.agent.discovery.found import Found
from etcdguard.agent.discovery.goflags import apiserver_flags
from etcdguard.agent.discovery.manifests import container_argv, find_container, host_path
from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.agent.discovery.nodefiles import load_pod_file, under

HEALTHCHECK_CERT = "healthcheck-client.crt"
HEALTHCHECK_KEY = "healthcheck-client.key"

Sources = list[tuple[str, str]]


def client_tls(cfg: EtcdSettings, found: Found, root: Path, *, apiserver_manifest: Path,
               config_source: str) -> tuple[ClientTLS, Sources]:
    """The client TLS files and, per field that is set, where it came from."""
    cacert, ca_src = _cacert(cfg, found, config_source)
    cert, key, cert_src = cfg.cert, cfg.key, "config" if cfg.cert is not None else ""
    server_tls = bool(found.value("cert-file") or found.value("trusted-ca-file"))
    pair = None
    if server_tls and cert is None:
        pair = _client_pair(found, root, cacert, apiserver_manifest, config_source)
    if pair is not None:
        cert, key, cert_src, api_ca = pair
        if cfg.cacert is None and api_ca is not None:
            cacert, ca_src = api_ca, cert_src
    sources: Sources = []
    if cacert is not None:
        sources.append(("tls.cacert", ca_src))
    if cert is not None:
        sources += [("tls.cert", cert_src), ("tls.key", cert_src)]
    return ClientTLS(cacert=cacert, cert=cert, key=key), sources


def _cacert(cfg: EtcdSettings, found: Found, config_source: str) -> tuple[Optional[Path], str]:
    if cfg.cacert is not None:
        return cfg.cacert, "config"
    if found.value("trusted-ca-file"):
        hint = f"set etcd.cacert in {config_source}"
        return found.host_path("trusted-ca-file", hint), found.source("trusted-ca-file")
    return None, ""


def _client_pair(found: Found, root: Path, cacert: Optional[Path], apiserver_manifest: Path,
                 config_source: str) -> Optional[tuple[Path, Path, str, Optional[Path]]]:
    """(cert, key, source, the CA kube-apiserver uses for etcd) of the best client certificate found."""
    ca_dir = cacert.parent if cacert is not None else None
    if ca_dir is not None and all(under(root, ca_dir / n).is_file() for n in (HEALTHCHECK_CERT, HEALTHCHECK_KEY)):
        cert = ca_dir / HEALTHCHECK_CERT
        return cert, ca_dir / HEALTHCHECK_KEY, f"kubeadm:{cert}", None
    apiserver = apiserver_etcd_client(root, apiserver_manifest)
    if apiserver is not None:
        api_cert, api_key, api_ca = apiserver
        return api_cert, api_key, f"manifest:{apiserver_manifest}", api_ca
    if found.value("cert-file") and found.value("key-file"):
        cert = found.host_path("cert-file", f"set etcd.cert in {config_source}")
        key = found.host_path("key-file", f"set etcd.key in {config_source}")
        return cert, key, f"{found.source('cert-file')} (fallback: etcd's server certificate)", None
    return None


def apiserver_etcd_client(root: Path, manifest: Path) -> Optional[tuple[Path, Path, Optional[Path]]]:
    """kube-apiserver's --etcd-certfile/--etcd-keyfile/--etcd-cafile as host paths, if usable."""
    if not under(root, manifest).is_file():
        return None
    pod = load_pod_file(root, manifest, "fix it, or set etcd.cert and etcd.key")
    container = find_container(pod, "kube-apiserver")
    if container is None:
        return None
    try:
        flags = apiserver_flags(container_argv(container)).values
        cert = host_path(pod, container, flags["etcd-certfile"])
        key = host_path(pod, container, flags["etcd-keyfile"])
        ca = host_path(pod, container, flags["etcd-cafile"]) if flags.get("etcd-cafile") else None
    except (ValueError, KeyError, LookupError):
        return None  # no usable client certificate there; the caller falls back
    return Path(cert), Path(key), Path(ca) if ca else None
