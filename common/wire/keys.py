"""CURVE key files: ZeroMQ certificates as `zmq.auth.create_certificates` writes them.

``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the
secret key, each as a 40-character Z85 string. Keys are returned as Z85
bytes, which is what ZeroMQ's CURVE socket options accept.

A secret key lets its holder stop etcd cluster-wide, so new secrets are
written 0600 (created that way, never chmod'ed afterwards) and a secret file
that any other user may read is refused. Errors are ConfigError (exit 2)
naming the file and, when given, the config key that points at it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import stat
import struct
from pathlib import Path

import zmq
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import ConfigError, UsageError
from zmq.utils import z85

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LINE_RE = re.compile(r"^\s*(public-key|secret-key)\s*=\s*[\"']?([^\"'\s]*)[\"']?\s*$")
MAX_KEY_FILE = 64 * 1024

_PUBLIC_TEMPLATE = """#   ****  Generated on {date} by etcdguard  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
curve
    public-key = "{public}"
"""

_SECRET_TEMPLATE = """#   ****  Generated on {date} by etcdguard  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "{public}"
    secret-key = "{secret}"
"""


def _label(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _read_keys(path: Path, what: str) -> dict[str, bytes]:
    """The public-key / secret-key lines of a certificate file, checked to be Z85 keys."""
    return parse_keys(_read_key_file(path, what), _label(path, what))


def _read_key_file(path: Path, what: str) -> str:
    """A certificate file's text; ConfigError naming it when it is not a small readable text file."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{_label(path, what)}: not a regular file")
        if st.st_size > MAX_KEY_FILE:
            raise ConfigError(f"{_label(path, what)}: {st.st_size} bytes is too large for a key file")
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(f"{_label(path, what)}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{_label(path, what)}: not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{_label(path, what)}: not a ZeroMQ certificate (not ASCII text)") from None
    except OSError as exc:
        raise ConfigError(f"{_label(path, what)}: cannot read: {exc.strerror}") from None


def parse_keys(text: str, label: str) -> dict[str, bytes]:
    """Pure: the ``public-key``/``secret-key`` lines of a certificate's text (Z85, checked); ConfigError
    naming ``label`` and the key that is not a 40-character Z85 encoding of 32 bytes."""
    found: dict[str, bytes] = {}
    for line in text.splitlines():
        m = None if line.lstrip().startswith("#") else _LINE_RE.match(line)
        if m is not None:
            found[m.group(1)] = _z85_key(m.group(1), m.group(2), label)
    return found


def _z85_key(name: str, value: str, label: str) -> bytes:
    if len(value) != 40:
        raise ConfigError(f"{label}: {name} is not a 40-character Z85 key")
    try:
        raw = z85.decode(value.encode("ascii"))
    except (ValueError, KeyError, IndexError, TypeError, struct.error):
        raise ConfigError(f"{label}: {name} is not valid Z85") from None
    if len(raw) != 32:
        raise ConfigError(f"{label}: {name} does not decode to 32 bytes")
    return value.encode("ascii")


def load_public(path: Path, what: str = "") -> bytes:
    """The public key (Z85) of a ``.key`` file (a ``.key_secret`` file also has one)."""
    keys = _read_keys(Path(path), what)
    if "public-key" not in keys:
        raise ConfigError(f"{_label(Path(path), what)}: no public-key line; expected a ZeroMQ certificate "
                          "(etcdguardctl keygen writes them)")
    return keys["public-key"]


def load_keypair(secret_path: Path, what: str = "") -> tuple[bytes, bytes]:
    """(public, secret) keys (Z85) of a ``.key_secret`` file.

    Refuses a file other users may read, and one whose public key does not
    belong to its secret key (a damaged or hand-edited file).
    """
    path = Path(secret_path)
    keys = _read_keys(path, what)
    if "secret-key" not in keys:
        raise ConfigError(f"{_label(path, what)}: no secret-key line (is this the public .key file? "
                          f"the secret one ends in {SECRET_SUFFIX})")
    mode = os.stat(path).st_mode
    if mode & 0o007:
        raise ConfigError(f"{_label(path, what)}: readable by other users (mode {mode & 0o777:04o}); "
                          f"run chmod 600 {path}")
    if mode & 0o070:
        log.warning("%s: secret key readable by its group (mode %04o); 0600 is safer", _label(path, what),
                    mode & 0o777)
    secret = keys["secret-key"]
    public = zmq.curve_public(secret)
    if "public-key" in keys and keys["public-key"] != public:
        raise ConfigError(f"{_label(path, what)}: its public-key does not belong to its secret-key "
                          "(damaged file?); generate a new pair")
    return public, secret


def fingerprint(public: bytes) -> str:
    """A short, loggable name for a public key: its first 8 Z85 characters."""
    text = public.decode("ascii", "replace") if isinstance(public, bytes) else str(public)
    return text[:8]


def generate(name: str, directory: Path) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) into ``directory`` (0700 if created).

    Refuses to overwrite an existing key. Each file is written to a temp file
    created with its final mode, fsync'ed, and renamed into place.
    """
    if not KEY_NAME_RE.fullmatch(name):
        raise UsageError(f"key name {name!r}: use letters, digits, '.', '_', '-' (at most 64, not starting "
                         "with '.' or '-')")
    directory = Path(directory)
    fsutil.ensure_private_dir(directory)
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to overwrite a key (remove it first)")
    public, secret = zmq.curve_keypair()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    _write_new(secret_path, _SECRET_TEMPLATE.format(date=date, public=public.decode(), secret=secret.decode()),
               0o600)
    try:
        _write_new(public_path, _PUBLIC_TEMPLATE.format(date=date, public=public.decode()), 0o644)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            secret_path.unlink()
        raise
    return public_path, secret_path


def _write_new(path: Path, text: str, mode: int) -> None:
    tmp = fsutil.temp_path(path.parent, path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)   # the umask may have taken bits away; never adds any beyond ``mode``
            os.write(fd, text.encode("ascii"))
            # replace=False links: fails if the target appeared meanwhile, so a key is never overwritten
            fsutil.commit_temp(tmp, path, fd=fd, replace=False)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
