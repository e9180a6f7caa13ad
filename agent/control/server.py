"""The agent's control server: a ZeroMQ ROUTER with CURVE, for the coordinator.

Threads, and who owns what:
- the socket loop owns the ROUTER; nothing else sends on it. It decodes every
  request and answers the quick ones itself (ping, snapshot.list,
  snapshot.fetch, snapshot.put, restore.status);
- the status worker answers ``status``; etcd is asked by a background probe
  and a reply waits at most ETCD_WAIT for it (else it carries the last answer
  and its age), so a slow etcd never stalls heartbeats, fetches or puts;
- the long-op worker is a single slot for snapshot.take and restore.step
  (agent/restore/remote.py): a second long op while one runs gets ``busy``.
Workers hand their replies back over an inproc PUSH/PULL pair.

Security: with CURVE, a ZAP authenticator admits only the public keys found
in ``authorized_keys`` (a directory of ``.key`` files, re-read when it
changes); an unknown key is refused during the handshake, before any message
is read, and the refusal is logged with the key. Requests are attributed to
the ZAP User-Id (the peer's CURVE key), never to anything the peer claims.
``insecure = true`` serves plain TCP and warns at every start.

Retries are safe: a request id seen again gets the recorded reply (a small
LRU), or joins the still running request; restore steps are also recorded on
disk per (operation id, step) by agent/restore/journal.py.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import zmq
from etcdguard.agent import __version__
from etcdguard.agent.base import fsutil
from etcdguard.agent.base.addresses import zmq_endpoint_is_ipv6
from etcdguard.agent.base.errors import EXIT_UNSAFE, ConfigError, EtcdguardError, UsageError
from etcdguard.agent.config import AgentConfig
from etcdguard.agent.control.transfer import FetchFiles, NotFound, Staging
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.etcd.client import Cancellation, EtcdClient
from etcdguard.agent.restore.journal import OperationStore
from etcdguard.agent.restore.remote import (
    OPEN_STATES,
    RemoteRestore,
    operation_status,
    restore_active,
    snapshot_in_use,
)
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.agent.snapshots.bundle import read_chunk as read_bundle_chunk
from etcdguard.agent.snapshots.store import SnapshotMeta, SnapshotStore
from etcdguard.agent.wire import keys
from etcdguard.agent.wire.protocol import (
    BAD_REQUEST,
    BUSY,
    CONFLICT,
    FAILED,
    INTERNAL,
    MAX_CHUNK,
    MAX_HEADER,
    NOT_FOUND,
    UNSAFE,
    ProtocolError,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)
from etcdguard.agent.wire.report import (
    AgentInfo,
    AgentReport,
    ClusterMember,
    DiskInfo,
    EtcdHealth,
    MemberConfig,
    RestoreInfo,
    SnapshotSummary,
    ToolInfo,
)
from etcdguard.agent.wire.typed import to_json

if TYPE_CHECKING:
    from etcdguard.agent.daemon import AgentDaemon

log = logging.getLogger(__name__)

POLL_MS = 250                   # the loop wakes at least this often (stop flag, housekeeping)
HOUSEKEEPING = 2.0              # seconds between idle-file, stale-upload and authorized-keys checks
BATCH = 64                      # requests read per wake-up before worker replies get a turn
REPLY_CACHE = 256               # recorded replies kept for retried request ids
REPLY_CACHE_MAX = 64 * 1024     # bytes; larger replies (fetch chunks) are not recorded
STATUS_QUEUE = 32               # status requests waiting for the status worker; more get busy
ETCD_PROBE_TIMEOUT = 3.0        # seconds; deadline of the etcd status call behind `status`
ETCD_WAIT = 0.5                 # seconds `status` waits for a fresh etcd answer before reporting the last one
STATUS_SNAPSHOTS = 5
REPLY_BUDGET = MAX_HEADER - 4096   # bytes of JSON a list-like result may use
STOP_GRACE = 60.0               # seconds a running long op gets to finish at shutdown
THROTTLE = 60.0                 # seconds between log lines about the same refused key or bad peer
STAGING_DIR = "staging"
MAX_MESSAGE = MAX_CHUNK + MAX_HEADER + 4096

Result = tuple[dict[str, Any], Optional[bytes]]
Handler = Callable[[], Result]


# ---------------------------------------------------------------------------
# pure helpers


def error_code(exc: EtcdguardError) -> str:
    """The protocol error code for an error raised while handling a request."""
    if isinstance(exc, ProtocolError):
        return exc.code
    if isinstance(exc, NotFound):
        return NOT_FOUND
    if isinstance(exc, UsageError):
        return BAD_REQUEST
    if exc.exit_code == EXIT_UNSAFE:
        return UNSAFE
    return FAILED


def answer(request_id: Optional[str], handler: Handler) -> list[bytes]:
    """Run ``handler`` and encode its result, or the EtcdguardError/OSError it raised, as a reply.

    Anything else propagates to the caller's outermost level, which logs it
    with a traceback and answers ``internal``.
    """
    try:
        result, data = handler()
        if request_id is None:
            raise ProtocolError(INTERNAL, "no request id to answer")
        return encode_reply(request_id, result, data)
    except EtcdguardError as exc:
        return encode_error(request_id, error_code(exc), str(exc))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return encode_error(request_id, FAILED, f"{exc.strerror or exc}{where}")


def internal_error(request_id: Optional[str], what: str) -> list[bytes]:
    log.exception("unexpected error while handling %s", what)
    return encode_error(request_id, INTERNAL, f"unexpected error in the agent while handling {what} "
                                              "(the agent's log has the details)")


def fit_list(items: list[dict[str, Any]], budget: int = REPLY_BUDGET) -> tuple[list[dict[str, Any]], bool]:
    """The longest prefix of ``items`` whose JSON fits ``budget`` bytes; and whether it was cut."""
    used = 2
    for i, item in enumerate(items):
        used += len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        if used > budget:
            return items[:i], True
    return items, False


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
                more = f" ({held} more refusals of this key since the last message)" if held else ""
                log.warning("refused a connection: CURVE key %s is not in authorized_keys %s%s", key,
                            self.authorized, more)
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


def authorized_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
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


# ---------------------------------------------------------------------------
# etcd status, asked in the background


def etcd_health(client: EtcdClient) -> EtcdHealth:
    """Ask etcd now: status, member list and alarms (raises EtcdUnavailable)."""
    st = client.status()
    members = client.members()
    alarms = client.alarms()
    return EtcdHealth(
        healthy=st.healthy and not alarms, error="; ".join([*st.errors, *alarms]) or None, version=st.version,
        revision=st.revision, member_id=f"{st.member_id:x}", cluster_id=f"{st.cluster_id:x}",
        leader=f"{st.leader:x}" if st.leader else None, is_leader=st.is_leader, is_learner=st.is_learner,
        db_size=st.db_size, alarms=tuple(alarms),
        members=tuple(ClusterMember(f"{m.id:x}", m.name, m.peer_urls, m.is_learner) for m in members))


class EtcdProbe:
    """The local member's status for `status` replies, asked off the reply path.

    One call to etcd at a time, in its own short-lived thread. A caller waits
    up to ``wait`` seconds for a fresh answer and otherwise gets the last one
    with its age, so a slow or hung etcd never makes the agent look dead.
    """

    def __init__(self, timeout: float = ETCD_PROBE_TIMEOUT) -> None:
        self.timeout = timeout
        self._cond = threading.Condition()
        self._running = False
        self._started = 0
        self._finished = 0
        self._result: Optional[EtcdHealth] = None
        self._at = 0.0
        self._client: Optional[tuple[str, EtcdClient]] = None

    def get(self, member: LocalMember, dial_timeout: float, wait: float = ETCD_WAIT) -> EtcdHealth:
        with self._cond:
            if not self._running:
                self._running = True
                self._started += 1
                threading.Thread(target=self._probe, args=(member, min(self.timeout, dial_timeout)),
                                 name="etcd-probe", daemon=True).start()
            wanted = self._started
            self._cond.wait_for(lambda: self._finished >= wanted, timeout=wait)
            if self._result is None:
                return EtcdHealth(error=f"etcd at {member.endpoint} has not answered yet")
            return dataclasses.replace(self._result, age=round(time.monotonic() - self._at, 3))

    def _probe(self, member: LocalMember, timeout: float) -> None:
        try:
            result = self._ask(member, timeout)
        except Exception as exc:   # the probe thread's outermost level: logged, reported in status
            log.exception("etcd status probe failed")
            result = EtcdHealth(error=f"etcd status probe failed: {exc}")
        with self._cond:
            self._result, self._at = result, time.monotonic()
            self._finished = self._started
            self._running = False
            self._cond.notify_all()

    def _ask(self, member: LocalMember, timeout: float) -> EtcdHealth:
        try:
            if self._client is None or self._client[0] != member.endpoint:
                self.close()
                self._client = (member.endpoint, EtcdClient(member.endpoint, member.tls, timeout))
            return etcd_health(self._client[1])
        except EtcdguardError as exc:
            self.close()
            return EtcdHealth(error=str(exc))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):   # a broken channel may fail to close; it is dropped anyway
                client[1].close()


# ---------------------------------------------------------------------------
# workers


@dataclass(frozen=True)
class Peer:
    identity: bytes
    key: Optional[str]          # Z85 CURVE public key from ZAP (User-Id); None on an insecure socket
    address: Optional[str]

    def describe(self) -> str:
        return key_label(self.key) if self.key else f"{self.address or 'unknown address'} (insecure)"


@dataclass
class Job:
    id: int
    label: str
    request_id: str
    waiters: list[bytes]
    long: bool
    cache_key: Optional[tuple[str, str]] = None
    fingerprint: Optional[str] = None
    step_key: Optional[tuple[str, str]] = None
    cancel: Optional[Cancellation] = None
    started: float = field(default_factory=time.monotonic)


class Worker:
    """A thread that runs handlers one at a time and pushes their replies to the socket loop."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, name: str, maxsize: int = 0) -> None:
        self._ctx = ctx
        self._endpoint = endpoint
        self._queue: queue.Queue[Optional[tuple[int, str, str, Handler]]] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    def submit(self, job: Job, handler: Handler) -> bool:
        try:
            self._queue.put_nowait((job.id, job.request_id, job.label, handler))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.PUSH)
        sock.linger = 0
        sock.connect(self._endpoint)
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                job_id, request_id, label, handler = item
                try:
                    frames = answer(request_id, handler)
                except Exception:  # noqa: BLE001 - the worker's outermost level: logged, answered
                    frames = internal_error(request_id, label)
                sock.send_multipart([str(job_id).encode(), *frames])
        finally:
            sock.close(0)

    def stop(self, timeout: float) -> bool:
        """Ask the thread to finish after its current job; True if it did within ``timeout``."""
        while True:
            try:
                self._queue.get_nowait()   # drop queued jobs: nobody will read their replies
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        return not self._thread.is_alive()


# ---------------------------------------------------------------------------
# the server


class AgentServer:
    """The control endpoint of one agent. start()/stop() are called by the daemon.

    ``runner`` returns the daemon's current BackupRunner (it is rebuilt on
    SIGHUP); member, config and store are read through it on every request.
    """

    def __init__(self, config: AgentConfig, runner: Callable[[], Optional[BackupRunner]]) -> None:
        self.settings = config.server
        self._initial_config = config
        self._runner_fn = runner
        self.public_key: Optional[bytes] = None
        self._secret_key: Optional[bytes] = None
        self.authorized_dir: Optional[Path] = None
        self.authorized: dict[str, Path] = {}
        source = config.source
        if not self.settings.insecure:
            self._load_keys(source)
        self.endpoint: Optional[str] = None
        self._ctx: Optional[zmq.Context[Any]] = None
        self._auth: Any = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._done_endpoint = f"inproc://etcdguard-server-done-{id(self):x}"
        self._throttle = Throttle()
        self._zap_log: Optional[ZapLog] = None
        self._authorized_sig: tuple[tuple[str, int, int], ...] = ()
        self.staging = Staging(config.state.dir / STAGING_DIR,
                               in_use=lambda path: snapshot_in_use(self._config().state.dir, path))
        self.fetch = FetchFiles(self.staging)
        self.staging.on_remove = self.fetch.forget
        # socket-loop state (touched only by the loop thread)
        self._replies: collections.OrderedDict[tuple[str, str], tuple[Optional[str], list[bytes]]] = (
            collections.OrderedDict())
        self._jobs: dict[int, Job] = {}
        self._by_request: dict[tuple[str, str], Job] = {}
        self._next_job = 0
        self.long_job: Optional[Job] = None
        self._status_worker: Optional[Worker] = None
        self._long_worker: Optional[Worker] = None
        self.etcd_probe = EtcdProbe()
        self.restore = RemoteRestore(self._runner, self._snapshot_path)   # used by the long-op worker

    # -- configuration -------------------------------------------------------
    def _load_keys(self, source: str) -> None:
        s = self.settings
        hint = ("; create a key pair with `etcdguardctl keygen NAME --dir DIR`, "
                "or set server.insecure = true for plain TCP (test setups only)")
        if s.secret_key is None:
            raise ConfigError(f"{source}: server.secret_key is not set (the agent's CURVE secret key file){hint}")
        try:
            self.public_key, self._secret_key = keys.load_keypair(s.secret_key, f"{source}: server.secret_key")
        except ConfigError as exc:
            raise ConfigError(f"{exc}{hint}") from None
        if s.authorized_keys is None:
            raise ConfigError(f"{source}: server.authorized_keys is not set (a directory of coordinator "
                              "public .key files)")
        self.authorized_dir = s.authorized_keys
        self.authorized = load_authorized(s.authorized_keys, f"{source}: server.authorized_keys")
        self._authorized_sig = authorized_signature(s.authorized_keys)

    def _runner(self) -> BackupRunner:
        runner = self._runner_fn()
        if runner is None:
            raise EtcdguardError("the agent is still starting; try again")
        return runner

    def _config(self) -> AgentConfig:
        runner = self._runner_fn()
        return runner.config if runner is not None else self._initial_config

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self.staging.prepare()
        ctx: zmq.Context[Any] = zmq.Context()
        self._ctx = ctx
        if self.settings.insecure:
            log.warning("server.insecure = true: the control channel on %s is plain TCP, unauthenticated and "
                        "unencrypted; anyone who can reach it can stop etcd and read snapshots",
                        self.settings.listen)
        else:
            from zmq.auth.thread import ThreadAuthenticator

            assert self.authorized_dir is not None
            self._zap_log = ZapLog(self.authorized_dir, self._throttle)
            self._auth = ThreadAuthenticator(ctx, log=self._zap_log)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self.authorized_dir))
            if not self.authorized:
                log.warning("server.authorized_keys %s holds no .key file: no coordinator can connect until one "
                            "is added", self.authorized_dir)
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()
        self._ready.wait(30.0)
        if self._start_error is not None or not self._ready.is_set():
            err = self._start_error
            self._cleanup_context(term=True)
            raise ConfigError(f"{self._initial_config.source}: server.listen {self.settings.listen}: "
                              f"cannot listen: {err or 'timed out'}")
        if self.settings.insecure:
            log.info("control server on %s (insecure)", self.endpoint)
        else:
            assert self.public_key is not None
            log.info("control server on %s, CURVE public key %s, %d authorized coordinator key(s) in %s",
                     self.endpoint, self.public_key.decode(), len(self.authorized), self.authorized_dir)

    def stop(self) -> None:
        self._stopping.set()
        job = self.long_job
        if job is not None and job.cancel is not None:
            job.cancel.cancel("agent stopping")
        if self._thread is not None:
            self._thread.join(STOP_GRACE + 10.0)
            if self._thread.is_alive():
                log.error("control server did not stop within %.0fs", STOP_GRACE + 10.0)
        log.info("control server stopped")

    def _cleanup_context(self, term: bool) -> None:
        if self._auth is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._auth.stop()
            self._auth = None
        if self._ctx is not None and term:
            self._ctx.term()
        self._ctx = None
        self.etcd_probe.close()

    def _open_router(self, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 10_000)
        sock.ipv6 = zmq_endpoint_is_ipv6(self.settings.listen)  # libzmq refuses tcp://[::1]:port without it
        if not self.settings.insecure:
            sock.curve_server = True
            assert self._secret_key is not None and self.public_key is not None
            sock.curve_secretkey = self._secret_key
            sock.curve_publickey = self.public_key
        try:
            sock.bind(self.settings.listen)
        except zmq.ZMQError:
            sock.close(0)
            raise
        last = sock.get(zmq.LAST_ENDPOINT)
        self.endpoint = last.decode() if isinstance(last, bytes) else str(last)
        return sock

    def _serve(self) -> None:
        assert self._ctx is not None
        ctx = self._ctx
        try:
            router = self._open_router(ctx)
        except zmq.ZMQError as exc:
            self._start_error = exc
            self._ready.set()
            return
        done = ctx.socket(zmq.PULL)
        done.linger = 0
        done.bind(self._done_endpoint)
        self._status_worker = Worker(ctx, self._done_endpoint, "control-status", STATUS_QUEUE)
        self._long_worker = Worker(ctx, self._done_endpoint, "control-long-op")
        self._status_worker.start()
        self._long_worker.start()
        self._ready.set()
        clean = True
        try:
            self._loop(router, done)
        finally:
            self._status_worker.stop(5.0)
            if not self._long_worker.stop(STOP_GRACE):
                clean = False
                label = self.long_job.label if self.long_job else "a long operation"
                log.error("%s still running after %.0fs; leaving it behind", label, STOP_GRACE)
            router.close(0)
            done.close(0)
            self.fetch.close()
            self.staging.close()
            self._cleanup_context(term=clean)

    def _loop(self, router: zmq.Socket[Any], done: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(done, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while not self._stopping.is_set():
            events = dict(poller.poll(POLL_MS))
            if done in events:
                self._drain_done(router, done)
            if router in events:
                for _ in range(BATCH):
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_message(router, frames)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING
                try:
                    self._housekeeping(now)
                except Exception:   # the loop's outermost level: never let housekeeping kill it
                    log.exception("control server housekeeping failed")

    def _housekeeping(self, now: float) -> None:
        self.fetch.expire(now)
        self.staging.expire(now)
        if self.authorized_dir is not None and self._auth is not None:
            sig = authorized_signature(self.authorized_dir)
            if sig != self._authorized_sig:
                self._authorized_sig = sig
                try:
                    found = load_authorized(self.authorized_dir, "server.authorized_keys")
                except ConfigError as exc:
                    log.error("authorized keys changed but cannot be read, keeping the previous set: %s", exc)
                    return
                self._auth.configure_curve(domain="*", location=str(self.authorized_dir))
                self.authorized = found
                log.info("authorized keys reloaded from %s: %d key(s)", self.authorized_dir, len(found))

    # -- the socket loop -----------------------------------------------------
    def _send(self, router: zmq.Socket[Any], identity: bytes, frames: list[bytes]) -> None:
        # ROUTER drops what it cannot deliver (peer gone, or its queue full): never blocks the loop.
        # Copying a chunk into the message is cheaper than pyzmq's zero-copy hand-back (measured).
        router.send_multipart([identity, *frames])

    def _drain_done(self, router: zmq.Socket[Any], done: zmq.Socket[Any]) -> None:
        while True:
            try:
                msg = done.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            job = self._jobs.pop(int(msg[0]), None)
            if job is None:
                continue
            frames = msg[1:]
            for identity in job.waiters:
                self._send(router, identity, frames)
            if job.cache_key is not None:
                self._by_request.pop(job.cache_key, None)
                self._remember(job.cache_key, job.fingerprint, frames)
            if job.long and self.long_job is job:
                self.long_job = None
            log.debug("%s answered after %.3fs", job.label, time.monotonic() - job.started)

    def _remember(self, key: tuple[str, str], fingerprint: Optional[str], frames: list[bytes]) -> None:
        if sum(len(f) for f in frames) > REPLY_CACHE_MAX:
            return
        self._replies[key] = (fingerprint, frames)
        self._replies.move_to_end(key)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)

    def _peer(self, identity: bytes, frame: zmq.Frame) -> Peer:
        key = address = None
        with contextlib.suppress(zmq.ZMQError):
            key = frame.get("User-Id") or None
        with contextlib.suppress(zmq.ZMQError):
            address = frame.get("Peer-Address") or None
        return Peer(identity, key if isinstance(key, str) else None, address if isinstance(address, str) else None)

    def _on_message(self, router: zmq.Socket[Any], frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        identity = frames[0].bytes
        request_id: Optional[str] = None
        label = "a request"
        try:
            peer = self._peer(identity, frames[1])
            try:
                request = decode_request([f.bytes for f in frames[1:]])
            except ProtocolError as exc:
                held = self._throttle.allow(f"bad:{peer.key or peer.address}")
                if held is not None:
                    log.info("refused a malformed request from %s: %s: %s%s", peer.describe(), exc.code,
                             exc.message[:200], f" ({held} more since the last message)" if held else "")
                self._send(router, identity, encode_error(exc.request_id, exc.code, exc.message))
                return
            request_id, label = request.id, request.op
            self._dispatch(router, peer, request)
        except Exception:  # noqa: BLE001 - the loop's outermost level: logged, answered
            self._send(router, identity, internal_error(request_id, label))

    def _dispatch(self, router: zmq.Socket[Any], peer: Peer, req: Request) -> None:
        rid, op, args = req.id, req.op, req.args
        if op == "snapshot.fetch":
            self._send(router, peer.identity, answer(rid, lambda: self.fetch.read(
                self._store(), args["name"], args["offset"], args["size"])))
            return
        if op == "ping":
            self._send(router, peer.identity, answer(rid, lambda: ({"pong": True, "version": __version__}, None)))
            return
        if op == "bundle.fetch":
            self._send(router, peer.identity, answer(rid, lambda: read_bundle_chunk(
                self._store(), args["name"], args["offset"], args["size"])))
            return
        if op == "snapshot.list":
            self._send(router, peer.identity, answer(rid, self._list))
            return
        if op == "restore.status":
            self._send(router, peer.identity, answer(rid, lambda: (self._restore_status(args["op_id"]), None)))
            return
        if op in ("status", "etcd.inspect"):
            job = self._new_job(op, rid, peer, long=False)
            assert self._status_worker is not None
            quick: Handler = ((lambda: (self._status(), None)) if op == "status"
                              else (lambda: (self._inspect(args.get("hashkv_revision")), None)))
            if not self._status_worker.submit(job, quick):
                self._jobs.pop(job.id, None)
                self._send(router, peer.identity, encode_error(rid, BUSY, f"too many {op} requests waiting"))
            return

        # Ops with effects: a request id seen before gets the recorded reply.
        cache_key = (peer.key or "", rid)
        fingerprint = req.fingerprint
        recorded = self._replies.get(cache_key)
        running = self._by_request.get(cache_key)
        if recorded is not None or running is not None:
            known = recorded[0] if recorded is not None else (running.fingerprint if running is not None else None)
            if known != fingerprint:
                self._send(router, peer.identity, encode_error(
                    rid, CONFLICT, f"request id {rid} was already used for a different request"))
            elif recorded is not None:
                self._send(router, peer.identity, recorded[1])
            elif running is not None:
                running.waiters.append(peer.identity)
            return

        if op in ("snapshot.put", "snapshot.put.abort"):
            if op == "snapshot.put.abort":
                log.info("snapshot.put.abort of upload %s by %s", args["upload"], peer.describe())
                handler: Handler = lambda: (self.staging.abort(args["upload"]), None)   # noqa: E731
            else:
                if args["offset"] == 0 and not req.data:
                    log.debug("snapshot.put probe for upload %s by %s", args["upload"], peer.describe())
                handler = lambda: (self.staging.put(args, req.data or b""), None)   # noqa: E731
            frames = answer(rid, handler)
            self._remember(cache_key, fingerprint, frames)
            self._send(router, peer.identity, frames)
            return

        # Long ops: one at a time, in the long-op worker.
        step_key: Optional[tuple[str, str]] = None
        if op == "restore.step":
            # Reused operation ids with other parameters are caught against the on-disk record.
            step_key = (args["op_id"], args["step"])
            long = self.long_job
            if long is not None and long.step_key == step_key and long.fingerprint == fingerprint:
                long.waiters.append(peer.identity)   # a retry under a new request id joins the running step
                return
        busy = self._busy_reason(op)
        if busy is not None:
            self._send(router, peer.identity, encode_error(rid, BUSY, busy))
            return
        if op == "snapshot.take":
            label = "snapshot.take"
            cancel = Cancellation()
            log.info("snapshot.take requested by %s", peer.describe())
            handler = lambda: self._take(cancel)   # noqa: E731
        else:
            label = f"restore.step {args['step']} of operation {args['op_id']}"
            cancel = None
            log.info("%s requested by %s", label, peer.describe())
            handler = lambda: (self.restore.step(args, peer.describe()), None)   # noqa: E731
        job = self._new_job(label, rid, peer, long=True)
        job.cache_key, job.fingerprint, job.step_key, job.cancel = cache_key, fingerprint, step_key, cancel
        self._by_request[cache_key] = job
        self.long_job = job
        assert self._long_worker is not None
        self._long_worker.submit(job, handler)

    def _new_job(self, label: str, rid: str, peer: Peer, long: bool) -> Job:
        self._next_job += 1
        job = Job(self._next_job, label, rid, [peer.identity], long)
        self._jobs[job.id] = job
        return job

    def _busy_reason(self, op: str) -> Optional[str]:
        job = self.long_job
        if job is not None:
            return f"{job.label} is running (for {time.monotonic() - job.started:.0f}s); try again later"
        if op == "snapshot.take":
            runner = self._runner_fn()
            if runner is not None and runner.slot.locked():
                return "a scheduled snapshot is being taken; try again later"
            if restore_active(self._config().state.dir):
                return "a restore operation is in progress on this node"
        return None

    # -- quick ops (socket loop) ---------------------------------------------
    def _store(self) -> SnapshotStore:
        runner = self._runner_fn()
        return runner.store if runner is not None else SnapshotStore(self._initial_config.backup.dir)

    def _list(self) -> Result:
        items, cut = fit_list([m.to_json() for m in self._store().list()])
        result: dict[str, Any] = {"snapshots": items}
        if cut:
            result["truncated"] = True
        return result, None

    def _restore_status(self, op_id: str) -> dict[str, Any]:
        result: dict[str, Any] = operation_status(self._config().state.dir, op_id)
        result["journal_tail"] = fit_list(result["journal_tail"][::-1], REPLY_BUDGET // 2)[0][::-1]
        if fit_list([result["steps"]], REPLY_BUDGET // 2)[1]:
            result["steps"] = {}
            result["truncated"] = True
        return result

    def _snapshot_path(self, name: str) -> Path:
        """A staged upload, else a snapshot of the local store, by file name."""
        staged = self.staging.staged(name)
        if staged is not None:
            return staged[0]
        for meta in self._store().list():
            if meta.name == name:
                return Path(meta.path)
        raise NotFound(f"no staged upload or local snapshot named {name!r} on this node")

    # -- status (status worker) ----------------------------------------------
    def _status(self) -> dict[str, Any]:
        return self.report().to_json()

    def report(self) -> AgentReport:
        runner = self._runner()
        config, member = runner.config, runner.member
        job = self.long_job
        busy = job.label if job is not None else ("snapshot (scheduled)" if runner.slot.locked() else None)
        tool = runner.tool()
        ops = OperationStore(config.state.dir)
        all_ops = ops.all()
        last = all_ops[-1] if all_ops else None
        records = [(o.op, o.record().get("state")) for o in all_ops]
        apiserver = config.apiserver
        return AgentReport(
            agent=AgentInfo(version=__version__, busy=busy),
            member=MemberConfig(
                name=member.name, peer_url=member.peer_url, data_dir=str(member.data_dir),
                wal_dir=str(member.wal_dir) if member.wal_dir else None,
                runtime=config.etcd.runtime or member.runtime, endpoints=tuple(member.endpoints),
                initial_cluster=member.initial_cluster, quota_backend_bytes=member.quota_backend_bytes,
                apiserver=None if apiserver is None else str(apiserver.manifest or apiserver.unit or "command"),
                restart=tuple(str(r.manifest or r.unit or "command") for r in config.restart)),
            etcd=self.etcd_probe.get(member, config.etcd.dial_timeout),
            restore_tool=None if tool is None else ToolInfo(str(tool.path), tool.kind, tool.version,
                                                            tool.supports_bump),
            disk=DiskInfo(data_dir_free=_free(member.data_dir),
                          wal_dir_free=_free(member.wal_dir) if member.wal_dir else None,
                          store_free=_free(runner.store.dir), staging_free=_free(self.staging.dir)),
            snapshots=tuple(summary(m) for m in runner.store.list()[:STATUS_SNAPSHOTS]),
            restore=RestoreInfo(locked=ops.locked(), last_op=last.op if last else None,
                                last_state=records[-1][1] if records else None,
                                open_ops=tuple(op for op, state in records if state in OPEN_STATES)),
        )

    def _inspect(self, hashkv_revision: Optional[int]) -> dict[str, Any]:
        """etcd asked now (not the probe's cached answer): for a restore's fence and verify checks."""
        runner = self._runner()
        member = runner.member
        result: dict[str, Any] = {"member": member.name}
        try:
            with EtcdClient(member.endpoint, member.tls, runner.config.etcd.dial_timeout) as client:
                result["etcd"] = to_json(etcd_health(client))
                if hashkv_revision is not None:
                    hash_, revision = client.hashkv(hashkv_revision)
                    result["hashkv"] = {"hash": hash_, "revision": revision, "asked": hashkv_revision}
        except EtcdguardError as exc:
            result["etcd"] = to_json(EtcdHealth(error=str(exc)))
        result["running"] = self._etcd_running()
        return result

    def _etcd_running(self) -> Optional[bool]:
        """Does this node's etcd process (as its runtime knows it) exist? None when that cannot be told."""
        try:
            return self.restore.restorer().runtime.etcd.is_running()
        except (EtcdguardError, OSError):
            return None

    # -- long ops (long-op worker) -------------------------------------------
    def _take(self, cancel: Cancellation) -> Result:
        meta = self._runner().run_once(cancel=cancel)
        return {"snapshot": meta.to_json()}, None


def summary(meta: SnapshotMeta) -> SnapshotSummary:
    """What the status report tells of a catalogued snapshot."""
    return SnapshotSummary(name=meta.name, size=meta.size, sha256=meta.sha256, revision=meta.revision,
                           created_at=meta.created_at, created_unix=meta.created_unix, member_name=meta.member_name,
                           member_id=meta.member_id, cluster_id=meta.cluster_id, etcd_version=meta.etcd_version,
                           revision_source=meta.revision_source, pinned=meta.pinned, bundle=meta.bundle)


def _free(path: Path) -> Optional[int]:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return fsutil.free_bytes(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def attach_server(daemon: AgentDaemon) -> Optional[AgentServer]:
    """Add the control server to the daemon's services (unless ``[server] enabled = false``).

    Keys are loaded here, before the daemon starts, so a bad key setup stops
    the agent at once with exit code 2.
    """
    if not daemon.config.server.enabled:
        log.info("control server disabled ([server] enabled = false)")
        return None
    server = AgentServer(daemon.config, lambda: daemon.runner)
    daemon.services.append(server)
    return server
