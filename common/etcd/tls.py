"""How a client reaches etcd: its default port, and the TLS files of a client connection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ETCD_CLIENT_PORT = 2379  # etcd's default client port, for a URL that names none


@dataclass(frozen=True)
class ClientTLS:
    """Files for a TLS client connection to etcd (as etcdctl's --cacert/--cert/--key)."""

    cacert: Optional[Path] = None
    cert: Optional[Path] = None
    key: Optional[Path] = None

    @property
    def enabled(self) -> bool:
        return self.cacert is not None or self.cert is not None
