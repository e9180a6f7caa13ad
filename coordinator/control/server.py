"""The control socket between etcdguardctl and the coordinator daemon.

A Unix stream socket. The client sends one JSON line ``{"cmd": ..., "args":
{...}}``; the daemon answers with JSON lines: any number of ``{"progress":
{...}}`` and then exactly one ``{"ok": true, "result": ...}`` or ``{"ok":
false, "error": "...", "exit_code": n}``. Each request runs in its own
thread, and the work belongs to the daemon: a client that disconnects stops
receiving progress, the work goes on to its end.

Liveness: as soon as the request line is read, and then every
HEARTBEAT_EVERY seconds while it runs, the daemon sends ``{"progress":
{"heartbeat": true}}``. A client can therefore wait for each next line with
a short deadline (etcdguardctl: ``[coordinator] control_timeout``) and tell a
stopped or hung daemon (nothing arrives) from a long backup or restore
(heartbeats keep arriving); ``request`` does not pass heartbeats on.

Access: the socket is created 0660, in a directory that must not be
world-writable nor belong to another non-root user (anyone who can write
there could replace the socket). Who may connect is enforced by those
permissions; the peer's pid/uid/gid (SO_PEERCRED) is logged with every
request.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, EtcdguardError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024        # bytes of the request line
REQUEST_READ_TIMEOUT = 10.0    # a client must send its request line within this
SOCKET_MODE = 0o660
HEARTBEAT_EVERY = 2.0          # seconds between heartbeat lines while a request runs
HEARTBEAT = {"heartbeat": True}

Emit = Callable[[Mapping[str, Any]], None]
# handler(cmd, args, emit_progress, peer) -> result (JSON-able); raises EtcdguardError to fail.
Handler = Callable[[str, dict[str, Any], Emit, "PeerCred"], Any]


class PeerCred:
    """Who is on the other end of a connection (from the kernel, not from the client)."""

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"


def peer_credentials(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


class DaemonNotRunning(EtcdguardError):
    """etcdguardctl found no coordinator daemon on the control socket."""


class ControlError(EtcdguardError):
    """The daemon answered a request with an error; carries its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------
# Server side.


def check_socket_dir(directory: Path, key: str = "control_socket") -> None:
    """Refuse a directory where others could swap the socket for their own."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(f"{key}: directory {directory} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{key}: {directory} is not a directory")
    if st.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{key}: directory {directory} is world-writable (mode {stat.S_IMODE(st.st_mode):04o}); "
                          "anyone could replace the socket. Use a directory only root or the coordinator's "
                          "user can write, e.g. /run/etcdguard")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{key}: directory {directory} belongs to uid {st.st_uid}, neither root nor this "
                          f"process (uid {os.geteuid()}); that user could replace the socket")


class ControlServer:
    """Accepts connections on the control socket; one thread per request."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._inode: Optional[tuple[int, int]] = None
        self._active: set[threading.Thread] = set()
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o750, parents=True)
        check_socket_dir(parent)
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The mode comes from the umask at bind time: there is no moment where the
        # socket exists with wider permissions. (Nothing else creates files yet.)
        old = os.umask(0o777 & ~SOCKET_MODE)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"control_socket: cannot create {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)   # exactly 0660 even under a stricter umask
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._thread.start()
        log.info("control socket %s (mode %04o)", self.path, SOCKET_MODE)

    def _clear_stale(self) -> None:
        """Remove a socket left by a crashed daemon; refuse if one answers or it is not a socket."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"control_socket: {self.path} exists and is not a socket; refusing to remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            os.unlink(self.path)   # nobody listens: a leftover
            log.info("removed stale control socket %s", self.path)
            return
        finally:
            probe.close()
        raise ConfigError(f"control_socket: {self.path} answers: another coordinator is running")

    def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(grace)
        # Remove the socket only if it is still ours (not a successor's).
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    def active_requests(self) -> int:
        with self._lock:
            return len(self._active)

    # -- serving -----------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError as exc:
                if self._stopping.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):
                    return
                log.warning("control socket accept failed: %s", exc)
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="control-request", daemon=True)
            with self._lock:
                self._active.add(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._serve_one(conn)
        finally:
            with self._lock:
                self._active.discard(threading.current_thread())

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            peer = peer_credentials(conn)
        except OSError as exc:
            log.warning("control: cannot read the peer's credentials (%s); closing", exc)
            return
        try:
            cmd, args = _read_request(conn)
        except EtcdguardError as exc:
            log.warning("control: bad request from %s: %s", peer, exc)
            _LineSender(conn).send({"ok": False, "error": str(exc), "exit_code": EXIT_USAGE})
            return
        sender = _LineSender(conn)
        log.info("control: %s from %s", cmd, peer)
        sender.progress(HEARTBEAT)   # the request arrived: a client's first-reply deadline is met at once
        done = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(sender, done), name="control-heartbeat", daemon=True)
        beat.start()
        try:
            result = self.handler(cmd, args, sender.progress, peer)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except EtcdguardError as exc:
            log.info("control: %s from %s failed: %s", cmd, peer, exc)
            reply = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        except Exception as exc:  # reported to the client, logged with the traceback
            log.exception("control: %s from %s: internal error", cmd, peer)
            reply = {"ok": False, "error": f"internal error in the coordinator: {exc!r} (see its log)",
                     "exit_code": EXIT_FAILED}
        finally:
            done.set()
            beat.join()   # no heartbeat after the final line
        if not sender.send(reply) and sender.gone:
            log.info("control: %s from %s finished after the client disconnected", cmd, peer)


def _heartbeat(sender: _LineSender, done: threading.Event) -> None:
    """Tell the client the daemon is alive every HEARTBEAT_EVERY seconds until ``done``."""
    while not done.wait(HEARTBEAT_EVERY):
        if not sender.send({"progress": HEARTBEAT}) and sender.gone:
            return


class _LineSender:
    """Writes JSON lines; once the client is gone it drops output instead of failing the work."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.gone = False
        self._lock = threading.Lock()
        conn.settimeout(30.0)   # a client that stops reading must not wedge the work forever

    def progress(self, fields: Mapping[str, Any]) -> None:
        self.send({"progress": dict(fields)})

    def send(self, obj: Mapping[str, Any]) -> bool:
        line = (json.dumps(obj, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
        with self._lock:
            if self.gone:
                return False
            try:
                self.conn.sendall(line)
            except OSError:
                self.gone = True
                return False
        return True


def _read_request(conn: socket.socket) -> tuple[str, dict[str, Any]]:
    conn.settimeout(REQUEST_READ_TIMEOUT)
    buf = b""
    try:
        while b"\n" not in buf:
            if len(buf) > MAX_REQUEST:
                raise ControlError(f"request longer than {MAX_REQUEST} bytes", EXIT_USAGE)
            chunk = conn.recv(4096)
            if not chunk:
                raise ControlError("connection closed before a complete request line", EXIT_USAGE)
            buf += chunk
    except socket.timeout:
        raise ControlError(f"no request line within {REQUEST_READ_TIMEOUT:.0f}s", EXIT_USAGE) from None
    line = buf.split(b"\n", 1)[0]
    try:
        req = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"request is not JSON: {exc}", EXIT_USAGE) from None
    if not isinstance(req, dict) or set(req) - {"cmd", "args"}:
        raise ControlError('request must be an object {"cmd": ..., "args": {...}}', EXIT_USAGE)
    cmd, args = req.get("cmd"), req.get("args", {})
    if not isinstance(cmd, str) or not cmd:
        raise ControlError("request: 'cmd' must be a non-empty string", EXIT_USAGE)
    if not isinstance(args, dict):
        raise ControlError("request: 'args' must be an object", EXIT_USAGE)
    return cmd, args


# ---------------------------------------------------------------------------
# Client side (etcdguardctl).


def request(path: Path, cmd: str, args: Optional[Mapping[str, Any]] = None, *,
            on_progress: Optional[Callable[[dict[str, Any]], None]] = None,
            connect_timeout: float = 5.0, idle_timeout: Optional[float] = None) -> Any:
    """Send one request and return its result; raise ControlError / DaemonNotRunning.

    ``idle_timeout`` bounds the wait for each line (the first reply, then the gap between two): the
    daemon sends heartbeats while it works, so only a stopped or hung daemon runs into it. Heartbeats
    are not passed to ``on_progress``.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"the coordinator daemon is not running: nothing answers on its control socket {path} "
                "(start it with `systemctl start etcdguard-coordinator`, or give the right --config)"
            ) from None
        except PermissionError:
            raise DaemonNotRunning(
                f"permission denied on the control socket {path}: run as root or as a member of the "
                "coordinator's group (etcdguard)") from None
        except OSError as exc:
            raise DaemonNotRunning(f"cannot reach the coordinator daemon on {path}: {exc.strerror or exc}") from None
        sock.settimeout(idle_timeout)
        line = json.dumps({"cmd": cmd, "args": dict(args or {})}) + "\n"
        sock.sendall(line.encode())
        with sock.makefile("rb") as reader:
            for raw in reader:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    raise ControlError(f"the coordinator sent a line that is not JSON: {raw[:80]!r}") from None
                if not isinstance(msg, dict):
                    raise ControlError(f"the coordinator sent an unexpected line: {raw[:80]!r}")
                if "progress" in msg:
                    progress = msg["progress"]
                    if on_progress is not None and isinstance(progress, dict) and not progress.get("heartbeat"):
                        on_progress(progress)
                    continue
                if msg.get("ok") is True:
                    return msg.get("result")
                code = msg.get("exit_code")
                raise ControlError(str(msg.get("error") or "the coordinator reported an error"),
                                   code if isinstance(code, int) and not isinstance(code, bool) else EXIT_FAILED)
        raise ControlError(f"the coordinator closed {path} before answering (did it stop? see its log)")
    except socket.timeout:
        waited = f"{idle_timeout:g}s" if idle_timeout is not None else "in time"
        raise ControlError(
            f"the coordinator daemon sent nothing for {waited} on {path} ([coordinator] control_timeout): it is "
            "stopped or hung (a running daemon answers at once and sends a heartbeat every "
            f"{HEARTBEAT_EVERY:g}s). Check `systemctl status etcdguard-coordinator` and its journal; an operation "
            "it runs goes on without this client") from None
    finally:
        sock.close()
