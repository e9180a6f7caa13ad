"""The local etcd member as discovery found it: one plain value."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.addresses import is_loopback, local_url, parse_url
from etcdguard.common.etcd.tls import ETCD_CLIENT_PORT, ClientTLS

__all__ = ["ETCD_CLIENT_PORT", "ClientTLS", "LocalMember", "prefer_local"]

@dataclass(frozen=True)
class LocalMember:
    """How etcd runs on this node. Paths are host paths (container paths already mapped)."""

    name: str
    data_dir: Path
    endpoints: tuple[str, ...]          # client URLs the agent talks to, best first
    peer_url: Optional[str] = None      # this member's --initial-advertise-peer-urls (first)
    tls: ClientTLS = field(default_factory=ClientTLS)
    runtime: Optional[str] = None       # static-pod | systemd | process
    manifest: Optional[Path] = None
    unit: Optional[str] = None
    initial_cluster: Optional[str] = None
    image: Optional[str] = None         # static pod container image (carries the etcd version)
    peer_tls: ClientTLS = field(default_factory=ClientTLS)
    wal_dir: Optional[Path] = None      # a separate --wal-dir (host path), else the WAL is in data_dir/member
    quota_backend_bytes: Optional[int] = None   # --quota-backend-bytes; None: etcd's default (2 GiB)
    server_tls: ClientTLS = field(default_factory=ClientTLS)   # --trusted-ca-file, --cert-file, --key-file
    sources: tuple[tuple[str, str], ...] = ()  # (field, where it came from) for `check`

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["wal_dir"] = str(self.wal_dir) if self.wal_dir is not None else None
        for key, value in list(out.items()):
            if isinstance(value, Path):
                out[key] = str(value)
        for group in ("tls", "peer_tls", "server_tls"):
            out[group] = {k: (str(v) if v is not None else None) for k, v in out[group].items()}
        out["endpoints"] = list(self.endpoints)
        out["sources"] = dict(self.sources)
        return out


def prefer_local(urls: list[str]) -> list[str]:
    """Order client URLs so loopback ones come first; a wildcard host means this node's loopback."""
    out: list[str] = []
    for url in urls:
        url = local_url(url, ETCD_CLIENT_PORT)
        if url not in out:
            out.append(url)

    def rank(url: str) -> int:
        try:
            return 0 if is_loopback(parse_url(url, default_port=ETCD_CLIENT_PORT).host) else 1
        except ValueError:
            return 1

    return sorted(out, key=rank)
