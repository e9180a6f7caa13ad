"""age encryption for what leaves a node: recipients, identity files, and streaming pipes.

The format is age's (age-encryption.org/v1), written and read by the ``age``
command-line tool through pipes, not by code of ours. Why the tool and not a
binding: Debian 12 (``age`` 1.1.1) and EPEL 9 (``age``) both package it, so the
.deb and the .rpm depend on a distribution package; the Python binding
(pyrage) is packaged by neither. The tool streams in 64 KiB chunks, so memory
stays flat whatever the snapshot's size, and an operator who has lost
etcdguard decrypts a vault object with the same tool: ``age -d -i KEY FILE``.

Every pipe here is checked when it ends: a reader sees an error, never a
short clean end, if age failed, so a truncated ciphertext can never be
committed as a complete object. Identities (secret keys) are only ever passed
to age as a file path; their content is not read into logs or messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Optional

from etcdguard.common.base.errors import ConfigError, EtcdguardError

log = logging.getLogger(__name__)

AGE = "age"
AGE_KEYGEN = "age-keygen"
CHUNK = 1 << 20
MAX_IDENTITY_FILE = 64 * 1024
# X25519 recipients: "age1" + 58 bech32 characters (lowercase, no 1 b i o).
RECIPIENT_RE = re.compile(r"age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}")
AGE_MAGIC = b"age-encryption.org/v1\n"


class AgeError(EtcdguardError):
    """age failed to encrypt or decrypt (a wrong identity, damaged data, or no age tool)."""


def check_recipients(recipients: Sequence[str]) -> Optional[str]:
    """Pure: None when every recipient is an age X25519 public key, else what is wrong."""
    for r in recipients:
        if not RECIPIENT_RE.fullmatch(r):
            shown = r if len(r) <= 20 else r[:16] + "..."
            hint = " (that is a secret key: give its public half, `age-keygen -y FILE`)" if r.startswith(
                "AGE-SECRET-KEY-") else ""
            return f"{shown!r} is not one{hint}"
    if len(set(recipients)) != len(recipients):
        return "a recipient is listed twice"
    return None


def is_age_file(head: bytes) -> bool:
    """Pure: whether bytes start like an age file (the binary format's header line)."""
    return head.startswith(AGE_MAGIC)


def find_age(tool: str = AGE) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AgeError(f"the {tool!r} command is not installed (Debian/Ubuntu: apt install age; "
                       "EL9: dnf install age from EPEL); it encrypts and decrypts the vault")
    return path


def check_identity_file(path: Path, what: str) -> None:
    """Refuse an identity file others may read (like the CURVE secret); ConfigError names the key.

    The file is checked for its mode and for holding an age secret key line,
    but never echoed.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {path}: not a regular file")
        if st.st_size > MAX_IDENTITY_FILE:
            raise ConfigError(f"{what} {path}: {st.st_size} bytes is too large for an age identity file")
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file (make one with `age-keygen -o {path}`)") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: not readable (permission denied)") from None
    if st.st_mode & 0o007:
        raise ConfigError(f"{what} {path}: readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                          f"run chmod 600 {path}")
    if st.st_mode & 0o070:
        log.warning("%s %s: age identity readable by its group (mode %04o); 0600 is safer", what, path,
                    stat.S_IMODE(st.st_mode))
    if not any(line.startswith("AGE-SECRET-KEY-1") for line in text.splitlines()):
        raise ConfigError(f"{what} {path}: holds no age secret key (an AGE-SECRET-KEY-1... line, as "
                          "`age-keygen -o FILE` writes it)")


def identity_recipients(path: Path) -> list[str]:
    """The public keys of an identity file (``age-keygen -y``); AgeError if age cannot read it."""
    proc = subprocess.run([find_age(AGE_KEYGEN), "-y", str(path)], capture_output=True, text=True, check=False,
                          timeout=30)
    if proc.returncode != 0:
        raise AgeError(f"age-keygen -y {path} failed: {proc.stderr.strip() or proc.returncode}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


class _CheckedOutput:
    """age's stdout as a file object whose end is only reported once age exited 0.

    boto3's multipart upload and our file copies stop at the first empty read;
    raising there instead makes them abort rather than commit a short object.
    """

    def __init__(self, proc: subprocess.Popen[bytes], errors: IO[bytes], doing: str) -> None:
        self.proc = proc
        self.errors = errors
        self.doing = doing
        assert proc.stdout is not None
        self._out = proc.stdout
        self.bytes = 0
        self.failure: Optional[BaseException] = None   # set by a feeder thread that could not write

    def read(self, size: int = -1) -> bytes:
        data = self._out.read(size if size is not None and size >= 0 else -1)
        if data:
            self.bytes += len(data)
            return data
        self.finish()
        return b""

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        code = self.proc.wait()
        if isinstance(self.failure, EtcdguardError):
            raise self.failure
        if self.failure is not None:
            raise AgeError(f"{self.doing}: reading the input failed: {self.failure}") from None
        if code != 0:
            self.errors.seek(0)
            text = self.errors.read(4000).decode("utf-8", "replace").strip()
            raise AgeError(f"{self.doing}: age exited with {code}: {_explain(text)}")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._out.close()


def _explain(text: str) -> str:
    if "no identity matched" in text:
        return f"{text} (the vault object was encrypted to other recipients: wrong age_identity?)"
    return text or "no message"


@contextlib.contextmanager
def _age(argv: list[str], stdin: Any, doing: str) -> Iterator[tuple[subprocess.Popen[bytes], _CheckedOutput]]:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=errors, close_fds=True)
        out = _CheckedOutput(proc, errors, doing)
        try:
            yield proc, out
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@contextlib.contextmanager
def encrypting(source: Path, recipients: Sequence[str]) -> Iterator[_CheckedOutput]:
    """Yield a readable stream of ``source`` encrypted to ``recipients`` (age binary format)."""
    argv = [find_age()]
    for r in recipients:
        argv += ["-r", r]
    with open(source, "rb") as src, _age(argv, src, f"encrypting {source.name}") as (_, out):
        yield out


@contextlib.contextmanager
def decrypting(source: IO[bytes], identity: Path, doing: str) -> Iterator[_CheckedOutput]:
    """Yield a readable stream of ``source`` decrypted with ``identity``.

    A thread feeds ``source`` (a file or an HTTP body) into age, so neither
    side ever holds more than a chunk.
    """
    argv = [find_age(), "-d", "-i", str(identity)]
    with _age(argv, subprocess.PIPE, doing) as (proc, out):
        assert proc.stdin is not None
        stdin = proc.stdin

        def feed() -> None:
            try:
                while True:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    stdin.write(chunk)
            except BrokenPipeError:
                pass   # age stopped reading: its exit status says why
            except (OSError, EtcdguardError, ValueError) as exc:
                out.failure = exc
                proc.kill()
            finally:
                with contextlib.suppress(OSError):
                    stdin.close()

        feeder = threading.Thread(target=feed, name="age-feed", daemon=True)
        feeder.start()
        try:
            yield out
        finally:
            if proc.poll() is None:
                proc.kill()
            feeder.join(30)


def copy_stream(src: Any, dst: IO[bytes], chunk: int = CHUNK) -> int:
    """Copy until the end; returns bytes copied (the reader's errors propagate)."""
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)


def encrypt_bytes(data: bytes, recipients: Sequence[str], doing: str) -> bytes:
    """``data`` encrypted to ``recipients`` (for small objects: a continuous backup's segments)."""
    argv = [find_age()]
    for r in recipients:
        argv += ["-r", r]
    return _run_age(argv, data, doing)


def decrypt_bytes(data: bytes, identity: Path, doing: str) -> bytes:
    """``data`` decrypted with ``identity``; AgeError when it cannot be (damaged, or another recipient's)."""
    return _run_age([find_age(), "-d", "-i", str(identity)], data, doing)


def _run_age(argv: list[str], data: bytes, doing: str) -> bytes:
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgeError(f"{doing}: age did not run: {exc}") from None
    if proc.returncode != 0:
        text = proc.stderr[:4000].decode("utf-8", "replace").strip()
        raise AgeError(f"{doing}: age exited with {proc.returncode}: {_explain(text)}")
    return proc.stdout
