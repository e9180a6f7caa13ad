"""Who may talk to the agent: its CURVE key pair, the authorized coordinator keys, the ZAP log.

The ZAP authenticator refuses an unknown key during the handshake, before any
message is read. That alone would let a session outlive its key: libzmq asks
ZAP only when a connection is made, so a coordinator whose key was removed
from ``authorized_keys`` would keep being answered on the connection it
already has. ``KeyRing.admits`` is therefore asked for every request, with the
peer's CURVE key as ZAP reported it (the frame's User-Id), against the set
read from the directory now; a revoked key gets no answer from its next
request on (after the housekeeping tick that sees the directory change).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional

import zmq
from etcdguard.agent.config import ServerSettings
from etcdguard.common.base.errors import ConfigError
from etcdguard.common.wire import keys

log = logging.getLogger(__name__)

THROTTLE = 60.0                 # seconds between log lines about the same refused key or bad peer
KEY_HINT = ("; create a key pair with `etcdguardctl keygen NAME --dir DIR`, "
            "or set server.insecure = true for plain TCP (test setups only)")

Signature = tuple[tuple[str, int, int], ...]


def key_label(key: Optional[str]) -> str:
    return f"key {key[:8]}..." if key else "an unauthenticated peer (insecure)"


class Throttle:
    """At most one log line per subject per interval; reports how many were held back."""

    def __init__(self, interval: float = THROTTLE, limit: int = 1024) -> None:
        self.interval = interval
        self.limit = limit
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def allow(self, subject: str, now: Optional[float] = None) -> Optional[int]:
        """None: stay quiet. Else the number of suppressed events since the last line."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._seen.get(subject)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return None
            if len(self._seen) >= self.limit:
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.interval}
            self._seen[subject] = [now, 0.0]
            return 0 if entry is None else int(entry[1])


def held_note(held: int, what: str = "since the last message") -> str:
    return f" ({held} more {what})" if held else ""


_CLIENT_KEY_RE = re.compile(r"client_key=(?:b['\"])?([^'\"\s]{40})")


class ZapLog:
    """Takes zmq.auth's log calls: a refused CURVE key becomes a (throttled) warning naming it."""

    def __init__(self, authorized: Path, throttle: Throttle) -> None:
        self.authorized = authorized
        self.throttle = throttle
        self.refusals = 0

    def _route(self, level: int, msg: str, args: tuple[Any, ...]) -> None:
        try:
            text = msg % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        if text.startswith("DENIED"):
            self.refusals += 1
            m = _CLIENT_KEY_RE.search(text)
            key = m.group(1) if m else "?"
            held = self.throttle.allow(f"denied:{key}")
            if held is not None:
                log.warning("refused a connection: CURVE key %s is not in authorized_keys %s%s", key,
                            self.authorized, held_note(held, "refusals of this key since the last message"))
            return
        log.log(level, "zap: %s", text)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._route(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._route(logging.INFO, msg, args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._route(logging.WARNING, msg, args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._route(logging.ERROR, msg, args)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._route(logging.ERROR, msg, args)


def authorized_signature(directory: Path) -> Signature:
    """What changes when a ``.key`` file in the directory is added, removed or edited."""
    out = []
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.endswith(keys.PUBLIC_SUFFIX):
                with contextlib.suppress(OSError):
                    st = entry.stat()
                    out.append((entry.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def load_authorized(directory: Path, what: str) -> dict[str, Path]:
    """Public keys (Z85 text -> file) of the ``.key`` files in ``directory``; ConfigError if unusable."""
    if not directory.is_dir():
        raise ConfigError(f"{what} {directory}: no such directory (put the coordinator's public .key files there)")
    found: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith(keys.PUBLIC_SUFFIX) and entry.is_file():
            found[keys.load_public(entry, f"{what}: key file").decode("ascii")] = entry
    return found


class KeyRing:
    """The agent's key pair and the coordinator keys it admits, kept current with the directory.

    Loaded at construction, so a bad key setup stops the agent at once (exit 2).
    With ``insecure = true`` there are no keys and every peer is admitted.
    """

    def __init__(self, settings: ServerSettings, source: str) -> None:
        self.insecure = settings.insecure
        self.public_key: Optional[bytes] = None
        self.secret_key: Optional[bytes] = None
        self.directory: Optional[Path] = None
        self.authorized: dict[str, Path] = {}
        self._signature: Signature = ()
        self._auth: Any = None
        self.throttle = Throttle()
        if not self.insecure:
            self._load(settings, source)

    def _load(self, s: ServerSettings, source: str) -> None:
        if s.secret_key is None:
            raise ConfigError(f"{source}: server.secret_key is not set (the agent's CURVE secret key file){KEY_HINT}")
        try:
            self.public_key, self.secret_key = keys.load_keypair(s.secret_key, f"{source}: server.secret_key")
        except ConfigError as exc:
            raise ConfigError(f"{exc}{KEY_HINT}") from None
        if s.authorized_keys is None:
            raise ConfigError(f"{source}: server.authorized_keys is not set (a directory of coordinator "
                              "public .key files)")
        self.directory = s.authorized_keys
        # The signature is taken before the keys are read: a change in between is seen at the next check.
        self._signature = authorized_signature(s.authorized_keys)
        self.authorized = load_authorized(s.authorized_keys, f"{source}: server.authorized_keys")

    def start(self, ctx: zmq.Context[Any]) -> None:
        """Start the ZAP authenticator on ``ctx`` (CURVE only)."""
        if self.insecure:
            return
        from zmq.auth.thread import ThreadAuthenticator

        assert self.directory is not None
        self._auth = ThreadAuthenticator(ctx, log=ZapLog(self.directory, self.throttle))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.directory))
        if not self.authorized:
            log.warning("server.authorized_keys %s holds no .key file: no coordinator can connect until one "
                        "is added", self.directory)

    def stop(self) -> None:
        if self._auth is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._auth.stop()
            self._auth = None

    def secure_router(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server with the agent's keys (nothing on an insecure server)."""
        if self.insecure:
            return
        assert self.secret_key is not None and self.public_key is not None
        sock.curve_server = True
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key

    def reload_if_changed(self) -> bool:
        """Re-read the directory when a key file was added, removed or edited; True if the set changed."""
        if self.directory is None or self._auth is None:
            return False
        sig = authorized_signature(self.directory)
        if sig == self._signature:
            return False
        self._signature = sig
        try:
            found = load_authorized(self.directory, "server.authorized_keys")
        except ConfigError as exc:
            log.error("authorized keys changed but cannot be read, keeping the previous set: %s", exc)
            return False
        self._auth.configure_curve(domain="*", location=str(self.directory))
        revoked = sorted(k for k in self.authorized if k not in found)
        self.authorized = found
        log.info("authorized keys reloaded from %s: %d key(s)%s", self.directory, len(found),
                 f"; revoked {', '.join(key_label(k) for k in revoked)} (refused from its next request on)"
                 if revoked else "")
        return True

    def admits(self, key: Optional[str]) -> bool:
        """May a request from the peer with this CURVE key (ZAP User-Id) be answered now?"""
        return self.insecure or (key is not None and key in self.authorized)
