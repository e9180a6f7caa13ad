"""Throwaway TLS material for etcd tests, made with the openssl command-line tool.

One CA signs a server certificate (SAN IP:127.0.0.1, IP:::1 and DNS:localhost, valid for
server and client auth, so etcd can use it for its client port and for peers)
and a client certificate. Keys are EC P-256: generating them takes milliseconds.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etcdguard.agent.discovery.member import ClientTLS

_CA_EXT = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_CLIENT_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class TLSMaterial:
    """Paths of one CA and the certificates it signed (all files 0600)."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_tls(self) -> ClientTLS:
        """The client side as the agent's config/discovery value."""
        return ClientTLS(cacert=self.ca_cert, cert=self.client_cert, key=self.client_key)

    def etcdctl_args(self) -> list[str]:
        """etcdctl's (and `etcdguard-agent snapshot`'s) TLS flags for the client certificate."""
        return [
            f"--cacert={self.ca_cert}",
            f"--cert={self.client_cert}",
            f"--key={self.client_key}",
        ]


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is needed to make test certificates (apt-get install openssl)")
    proc = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _genkey(path: Path, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=cwd)
    os.chmod(path, 0o600)


def _sign(
    cwd: Path, key: Path, cert: Path, subject: str, ext: str, ca: Optional[tuple[Path, Path]], days: int
) -> None:
    ext_file = cwd / f"{cert.stem}.ext"
    ext_file.write_text(ext, encoding="ascii")
    csr = cwd / f"{cert.stem}.csr"
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=cwd)
    serial = str(secrets.randbits(63) | 1)
    signer = ["-signkey", str(key)] if ca is None else ["-CA", str(ca[0]), "-CAkey", str(ca[1])]
    _openssl(
        "x509", "-req", "-in", str(csr), *signer, "-set_serial", serial, "-days", str(days),
        "-sha256", "-extfile", str(ext_file), "-out", str(cert), cwd=cwd,
    )
    os.chmod(cert, 0o600)
    csr.unlink()
    ext_file.unlink()


def make_tls(directory: Path, days: int = 3650, cn_prefix: str = "etcdguard-test") -> TLSMaterial:
    """Create a CA, a server and a client certificate in ``directory`` (made 0700 if new).

    Call it twice with different directories to get two unrelated CAs, e.g. to
    prove that a certificate from the wrong CA is refused.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    d = directory.resolve()
    mat = TLSMaterial(
        dir=d,
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
    )
    for key in (mat.ca_key, mat.server_key, mat.client_key):
        _genkey(key, d)
    _sign(d, mat.ca_key, mat.ca_cert, f"/CN={cn_prefix}-ca", _CA_EXT, None, days)
    ca = (mat.ca_cert, mat.ca_key)
    _sign(d, mat.server_key, mat.server_cert, f"/CN={cn_prefix}-server", _SERVER_EXT, ca, days)
    _sign(d, mat.client_key, mat.client_cert, f"/CN={cn_prefix}-client", _CLIENT_EXT, ca, days)
    return mat
