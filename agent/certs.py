"""The certificates etcd and kube-apiserver are configured with on this node, and when each expires.

Which files: etcd's server certificate and CA (``--cert-file``,
``--trusted-ca-file``), its peer certificate and CA (``--peer-cert-file``,
``--peer-trusted-ca-file``), the client certificate and CA the agent talks to
etcd with, and kube-apiserver's etcd client certificate and CA
(``--etcd-certfile``, ``--etcd-cafile``) from its manifest where one is
configured. Each file is read with the ``cryptography`` library; a file with
several certificates (a CA bundle) counts by the one that expires first. A
file is parsed again only when it changed (its size or mtime), so the status
report and every scrape read a cache.
"""

from __future__ import annotations

import datetime
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from cryptography import x509
from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.goflags import apiserver_flags
from etcdguard.agent.discovery.manifests import ManifestError, container_argv, find_container, host_path, load_pod
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.common.base.durations import iso_utc
from etcdguard.common.wire.report import CertificateInfo

log = logging.getLogger(__name__)

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
KINDS = ("server", "peer", "client", "ca")


def certificate_files(config: AgentConfig, member: LocalMember) -> list[tuple[Path, tuple[str, ...]]]:
    """(path, kinds) of every certificate file etcd and kube-apiserver use here, each path once."""
    found: dict[Path, list[str]] = {}

    def add(path: Optional[Path], kind: str) -> None:
        if path is not None:
            kinds = found.setdefault(Path(path), [])
            if kind not in kinds:
                kinds.append(kind)

    add(member.server_tls.cert, "server")
    add(member.server_tls.cacert, "ca")
    add(member.peer_tls.cert, "peer")
    add(member.peer_tls.cacert, "ca")
    add(member.tls.cert, "client")
    add(member.tls.cacert, "ca")
    for path, kind in apiserver_certificates(config):
        add(path, kind)
    return [(path, tuple(kinds)) for path, kinds in found.items()]


def apiserver_certificates(config: AgentConfig) -> list[tuple[Path, str]]:
    """kube-apiserver's etcd client certificate and CA from its manifest (host paths); none when unknown."""
    manifest = config.apiserver.manifest if config.apiserver is not None else None
    if manifest is None:
        return []
    try:
        pod = load_pod(manifest.read_text(encoding="utf-8"))
        container = find_container(pod, "kube-apiserver")
        if container is None:
            return []
        flags = apiserver_flags(container_argv(container)).values
        out = []
        for flag, kind in (("etcd-certfile", "client"), ("etcd-cafile", "ca")):
            if flags.get(flag):
                out.append((Path(host_path(pod, container, flags[flag])), kind))
        return out
    except (OSError, ManifestError, LookupError, ValueError) as exc:
        log.debug("kube-apiserver's certificates in %s not read: %s", manifest, exc)
        return []


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    when = getattr(cert, "not_valid_after_utc", None)   # cryptography >= 42; older ones give naive UTC
    if when is None:
        when = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return when  # type: ignore[no-any-return]


def read_certificate(path: Path, kinds: tuple[str, ...]) -> CertificateInfo:
    """When the certificate(s) in ``path`` expire (the soonest); the error when they cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return CertificateInfo(str(path), kinds, error=f"cannot read it: {exc.strerror or exc}")
    blocks = _PEM.findall(data)
    if not blocks:
        return CertificateInfo(str(path), kinds, error="no PEM certificate in it")
    try:
        certs = [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        return CertificateInfo(str(path), kinds, error=f"not a certificate: {exc}")
    first = min(certs, key=_not_after)
    when = _not_after(first).timestamp()
    return CertificateInfo(str(path), kinds, not_after=iso_utc(when), not_after_unix=when,
                           subject=first.subject.rfc4514_string())


class CertificateCache:
    """The certificates' expiry, each file parsed again only when its size or mtime changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[Path, tuple[str, ...]], tuple[tuple[int, int], CertificateInfo]] = {}
        self.files: Sequence[tuple[Path, tuple[str, ...]]] = ()

    def read(self, files: Optional[Sequence[tuple[Path, tuple[str, ...]]]] = None) -> tuple[CertificateInfo, ...]:
        with self._lock:
            if files is not None:
                self.files = tuple(files)
            out = []
            for path, kinds in self.files:
                try:
                    st = path.stat()
                    stamp = (st.st_size, st.st_mtime_ns)
                except OSError:
                    stamp = (-1, -1)
                cached = self._seen.get((path, kinds))
                if cached is None or cached[0] != stamp:
                    cached = (stamp, read_certificate(path, kinds))
                    self._seen[(path, kinds)] = cached
                out.append(cached[1])
            return tuple(out)


_CACHE = CertificateCache()


def current(config: AgentConfig, member: LocalMember) -> tuple[CertificateInfo, ...]:
    """This node's certificates now (the metrics and the status report share one cache)."""
    return _CACHE.read(certificate_files(config, member))
