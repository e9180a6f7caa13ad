"""The agent's control server: a ZeroMQ ROUTER with CURVE, for the coordinator.

This module is the socket loop; the rest of the control server lives beside it:
auth.py (keys, the ZAP log, reloads, the per-request key check), handlers.py
(the ops and the ``OPS`` table of lanes), workers.py (the status and long-op
workers), status.py (the status report), outbox.py (sending, and the bound
on a peer's unread data), transfer.py (chunk reads and the staging area).

Threads, and who owns what:
- the socket loop owns the ROUTER; nothing else sends on it. It decodes every
  request, checks the peer's key, and runs the ``Lane.LOOP`` and
  ``Lane.STAGING`` ops itself;
- the status worker answers ``status`` and ``etcd.inspect``; etcd is asked by
  a background probe and a reply waits at most ETCD_WAIT for it (else it
  carries the last answer with its age while that is recent, and "not
  measured now" after), so a slow etcd never stalls heartbeats, fetches or
  puts;
- the long-op worker is a single slot for snapshot.take and restore.step
  (agent/restore/remote.py): a second long op while one runs gets ``busy``;
- two compression workers compress the chunks a fetch asks for compressed:
  the loop reads each chunk and hands it over, so it reads the next one while
  the last is compressed (zstd releases the GIL).
Workers hand their replies back over an inproc PUSH/PULL pair.

Security: with CURVE, a ZAP authenticator admits only the public keys found
in ``authorized_keys`` (a directory of ``.key`` files, re-read when it
changes); an unknown key is refused during the handshake, before any message
is read, and the refusal is logged with the key. Every request is checked
again against the current set, so a key removed from the directory gets no
answer from its next request on. Requests are attributed to the ZAP User-Id
(the peer's CURVE key), never to anything the peer claims.
``insecure = true`` serves plain TCP and warns at every start.

Retries are safe: a request id seen again gets the recorded reply (a small
LRU), or joins the still running request; restore steps are also recorded on
disk per (operation id, step) by agent/restore/journal.py.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

import zmq
from etcdguard.agent.config import AgentConfig
from etcdguard.agent.control.auth import KeyRing, held_note
from etcdguard.agent.control.handlers import OPS, Call, Handlers, Lane, Op, Peer
from etcdguard.agent.control.outbox import RECEIVE_HWM, SEND_HWM, Outbox
from etcdguard.agent.control.transfer import compress_chunk
from etcdguard.agent.control.workers import Handler, Job, Worker, answer, internal_error
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.common.base.addresses import zmq_endpoint_is_ipv6
from etcdguard.common.base.errors import ConfigError, EtcdguardError
from etcdguard.common.base.slot import Slot
from etcdguard.common.etcd.client import Cancellation
from etcdguard.common.wire.protocol import (
    BUSY,
    CONFLICT,
    MAX_CHUNK,
    MAX_HEADER,
    ProtocolError,
    decode_request,
    encode_error,
)

if TYPE_CHECKING:
    from etcdguard.agent.daemon import AgentDaemon

log = logging.getLogger(__name__)

POLL_MS = 250                   # the loop wakes at least this often (stop flag, housekeeping)
HOUSEKEEPING = 2.0              # seconds between idle-file, stale-upload and authorized-keys checks
BATCH = 64                      # requests read per wake-up before worker replies get a turn
REPLY_CACHE = 256               # recorded replies kept for retried request ids
REPLY_CACHE_MAX = 64 * 1024     # bytes; larger replies (fetch chunks) are not recorded
STATUS_QUEUE = 32               # status requests waiting for the status worker; more get busy
STOP_GRACE = 60.0               # seconds a running long op gets to finish at shutdown
COMPRESS_WORKERS = 2            # threads that compress fetched chunks (zstd releases the GIL)
COMPRESS_QUEUE = 4              # chunks waiting for each; beyond that the loop compresses the chunk itself
MAX_MESSAGE = MAX_CHUNK + MAX_HEADER + 4096

CacheKey = tuple[str, str]


class AgentServer:
    """The control endpoint of one agent. start()/stop() are called by the daemon.

    ``runner`` returns the daemon's current BackupRunner (it is rebuilt on
    SIGHUP); member, config and store are read through it on every request.
    """

    def __init__(self, config: AgentConfig, runner: Callable[[], Optional[BackupRunner]]) -> None:
        self.settings = config.server
        self._source = config.source
        self.keys = KeyRing(config.server, config.source)   # raises ConfigError: the agent stops with exit 2
        self.long_slot = Slot()   # the long-op worker's single slot: what it runs, taken until its reply is sent
        self.handlers = Handlers(config, runner, self.long_slot)
        self.endpoint: Optional[str] = None
        self._ctx: Optional[zmq.Context[Any]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._done_endpoint = f"inproc://etcdguard-server-done-{id(self):x}"
        # socket-loop state (touched only by the loop thread)
        self._outbox: Optional[Outbox] = None
        self._replies: collections.OrderedDict[CacheKey, tuple[Optional[str], list[bytes]]] = (
            collections.OrderedDict())
        self._jobs: dict[int, Job] = {}
        self._by_request: dict[CacheKey, Job] = {}
        self._next_job = 0
        self.long_job: Optional[Job] = None
        self._status_worker: Optional[Worker] = None
        self._long_worker: Optional[Worker] = None
        self._compress_workers: list[Worker] = []
        self._next_compress = 0
        self._lanes: dict[Lane, Callable[[Op, Call], None]] = {
            Lane.LOOP: self._run_now, Lane.STAGING: self._stage, Lane.STATUS: self._to_status_worker,
            Lane.LONG: self._start_long,
        }

    @property
    def public_key(self) -> Optional[bytes]:
        return self.keys.public_key

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self.handlers.staging.prepare()
        ctx: zmq.Context[Any] = zmq.Context()
        self._ctx = ctx
        if self.settings.insecure:
            log.warning("server.insecure = true: the control channel on %s is plain TCP, unauthenticated and "
                        "unencrypted; anyone who can reach it can stop etcd and read snapshots",
                        self.settings.listen)
        self.keys.start(ctx)
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()
        self._ready.wait(30.0)
        if self._start_error is not None or not self._ready.is_set():
            err = self._start_error
            self._cleanup_context(term=True)
            raise ConfigError(f"{self._source}: server.listen {self.settings.listen}: "
                              f"cannot listen: {err or 'timed out'}")
        if self.settings.insecure:
            log.info("control server on %s (insecure)", self.endpoint)
        else:
            assert self.public_key is not None
            log.info("control server on %s, CURVE public key %s, %d authorized coordinator key(s) in %s",
                     self.endpoint, self.public_key.decode(), len(self.keys.authorized), self.keys.directory)

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
        self.keys.stop()
        if self._ctx is not None and term:
            self._ctx.term()
        self._ctx = None
        self.handlers.reporter.close()

    def _open_router(self, ctx: zmq.Context[Any]) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
        sock.setsockopt(zmq.HANDSHAKE_IVL, 10_000)
        sock.ipv6 = zmq_endpoint_is_ipv6(self.settings.listen)  # libzmq refuses tcp://[::1]:port without it
        self.keys.secure_router(sock)
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
        self._outbox = Outbox(router)
        done = ctx.socket(zmq.PULL)
        done.linger = 0
        done.bind(self._done_endpoint)
        self._status_worker = Worker(ctx, self._done_endpoint, "control-status", STATUS_QUEUE)
        self._long_worker = Worker(ctx, self._done_endpoint, "control-long-op")
        self._status_worker.start()
        self._long_worker.start()
        self._compress_workers = [Worker(ctx, self._done_endpoint, f"fetch-zstd-{i}", COMPRESS_QUEUE)
                                  for i in range(COMPRESS_WORKERS)]
        for w in self._compress_workers:
            w.start()
        self._ready.set()
        clean = True
        try:
            self._loop(router, done)
        finally:
            self._status_worker.stop(5.0)
            for w in self._compress_workers:
                w.stop(5.0)
            if not self._long_worker.stop(STOP_GRACE):
                clean = False
                log.error("%s still running after %.0fs; leaving it behind", self.long_slot.doing or "a long operation",
                          STOP_GRACE)
            router.close(0)
            done.close(0)
            self.handlers.close()
            self._cleanup_context(term=clean)

    def _loop(self, router: zmq.Socket[Any], done: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(done, zmq.POLLIN)
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while not self._stopping.is_set():
            events = dict(poller.poll(POLL_MS))
            if done in events:
                self._drain_done(done)
            if router in events:
                for _ in range(BATCH):
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._on_message(frames)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING
                try:
                    self._housekeeping(now)
                except Exception:   # the loop's outermost level: never let housekeeping kill it
                    log.exception("control server housekeeping failed")

    def _housekeeping(self, now: float) -> None:
        self.handlers.fetch.expire(now)
        self.handlers.staging.expire(now)
        self.keys.reload_if_changed()
        if self._outbox is not None:
            self._outbox.forget_idle()

    # -- the socket loop -----------------------------------------------------
    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        assert self._outbox is not None
        self._outbox.send(identity, frames)

    def _outbox_data(self, account: str, identity: bytes, frames: list[bytes]) -> None:
        assert self._outbox is not None
        self._outbox.send_data(account, identity, frames)

    def _drain_done(self, done: zmq.Socket[Any]) -> None:
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
                if job.data_account is not None:   # a compressed chunk: counted in the peer's fetch window
                    self._outbox_data(job.data_account, identity, frames)
                else:
                    self._send(identity, frames)
            if job.cache_key is not None:
                self._by_request.pop(job.cache_key, None)
                self._remember(job.cache_key, job.fingerprint, frames)
            if job.long and self.long_job is job:
                self.long_job = None
                self.long_slot.release()
            log.debug("%s answered after %.3fs", job.label, time.monotonic() - job.started)

    def _remember(self, key: CacheKey, fingerprint: Optional[str], frames: list[bytes]) -> None:
        if sum(len(f) for f in frames) > REPLY_CACHE_MAX:
            return
        self._replies[key] = (fingerprint, frames)
        self._replies.move_to_end(key)
        while len(self._replies) > REPLY_CACHE:
            self._replies.popitem(last=False)

    @staticmethod
    def _peer(identity: bytes, frame: zmq.Frame) -> Peer:
        key = address = None
        with contextlib.suppress(zmq.ZMQError):
            key = frame.get("User-Id") or None
        with contextlib.suppress(zmq.ZMQError):
            address = frame.get("Peer-Address") or None
        return Peer(identity, key if isinstance(key, str) else None, address if isinstance(address, str) else None)

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        identity = frames[0].bytes
        request_id: Optional[str] = None
        label = "a request"
        try:
            peer = self._peer(identity, frames[1])
            if not self.keys.admits(peer.key):
                self._refuse_revoked(peer)
                return
            try:
                request = decode_request([f.bytes for f in frames[1:]])
            except ProtocolError as exc:
                held = self.keys.throttle.allow(f"bad:{peer.key or peer.address}")
                if held is not None:
                    log.info("refused a malformed request from %s: %s: %s%s", peer.describe(), exc.code,
                             exc.message[:200], held_note(held))
                self._send(identity, encode_error(exc.request_id, exc.code, exc.message))
                return
            request_id, label = request.id, request.op
            op = OPS[request.op]
            self._lanes[op.lane](op, Call(request, peer))
        except Exception:  # noqa: BLE001 - the loop's outermost level: logged, answered
            self._send(identity, internal_error(request_id, label))

    def _refuse_revoked(self, peer: Peer) -> None:
        """A session whose key left authorized_keys after it connected: no answer, as at connect."""
        held = self.keys.throttle.allow(f"revoked:{peer.key}")
        if held is not None:
            log.warning("refused a request from %s: its CURVE key %s is no longer in authorized_keys %s%s",
                        peer.describe(), peer.key, self.keys.directory, held_note(held))

    # -- lanes ---------------------------------------------------------------
    def _run_now(self, op: Op, call: Call) -> None:
        req, peer = call.request, call.peer
        handler: Handler = lambda: op.run(self.handlers, call)   # noqa: E731
        if not op.data:
            self._send(peer.identity, answer(req.id, handler))
            return
        assert self._outbox is not None
        refusal = self._outbox.refusal(peer.account, int(req.args.get("size", 0)))
        if refusal is not None:
            held = self.keys.throttle.allow(f"window:{peer.account}")
            if held is not None:
                log.warning("refused %s from %s: %s%s", req.op, peer.describe(), refusal, held_note(held))
            self._send(peer.identity, encode_error(req.id, BUSY, refusal))
            return
        level = op.compress(call) if op.compress is not None else None
        if level is not None:
            self._compressed(call, handler, level)
            return
        self._outbox.send_data(peer.account, peer.identity, answer(req.id, handler))

    def _compressed(self, call: Call, read: Handler, level: int) -> None:
        """A chunk asked for compressed: read here, compressed by a worker (the loop reads the next chunk
        meanwhile), sent by the loop when the worker hands it back (``_drain_done``). With every worker's
        queue full the loop compresses it itself, so the work in flight stays bounded."""
        req, peer = call.request, call.peer
        try:
            chunk = read()
        except (EtcdguardError, OSError) as exc:
            self._send(peer.identity, answer(req.id, _raising(exc)))
            return
        job = self._new_job(req.op, req.id, peer, long=False)
        job.data_account = peer.account
        for _ in self._compress_workers:
            worker = self._compress_workers[self._next_compress % len(self._compress_workers)]
            self._next_compress += 1
            if worker.submit(job, lambda: compress_chunk(chunk, level)):
                return
        self._jobs.pop(job.id, None)
        self._outbox_data(peer.account, peer.identity, answer(req.id, lambda: compress_chunk(chunk, level)))

    def _to_status_worker(self, op: Op, call: Call) -> None:
        req, peer = call.request, call.peer
        job = self._new_job(req.op, req.id, peer, long=False)
        assert self._status_worker is not None
        if not self._status_worker.submit(job, lambda: op.run(self.handlers, call)):
            self._jobs.pop(job.id, None)
            self._send(peer.identity, encode_error(req.id, BUSY, f"too many {req.op} requests waiting"))

    def _replayed(self, call: Call) -> bool:
        """Ops with effects: a request id seen before gets the recorded reply, or joins the running request."""
        req, peer = call.request, call.peer
        cache_key = (peer.key or "", req.id)
        recorded = self._replies.get(cache_key)
        running = self._by_request.get(cache_key)
        if recorded is None and running is None:
            return False
        known = recorded[0] if recorded is not None else (running.fingerprint if running is not None else None)
        if known != req.fingerprint:
            self._send(peer.identity, encode_error(
                req.id, CONFLICT, f"request id {req.id} was already used for a different request"))
        elif recorded is not None:
            self._send(peer.identity, recorded[1])
        elif running is not None:
            running.waiters.append(peer.identity)
        return True

    def _stage(self, op: Op, call: Call) -> None:
        if self._replayed(call):
            return
        req, peer = call.request, call.peer
        frames = answer(req.id, lambda: op.run(self.handlers, call))
        self._remember((peer.key or "", req.id), req.fingerprint, frames)
        self._send(peer.identity, frames)

    def _start_long(self, op: Op, call: Call) -> None:
        if self._replayed(call):
            return
        req, peer = call.request, call.peer
        # Reused operation ids with other parameters are caught against the on-disk record.
        step_key = req.dedup_key
        running = self.long_job
        if (step_key is not None and running is not None and running.step_key == step_key
                and running.fingerprint == req.fingerprint):
            running.waiters.append(peer.identity)   # a retry under a new request id joins the running step
            return
        label = op.label(req)
        busy = self._take_long_slot(op, label)
        if busy is not None:
            self._send(peer.identity, encode_error(req.id, BUSY, busy))
            return
        cancel = Cancellation() if op.cancellable else None
        log.info("%s requested by %s", label, peer.describe())
        job = self._new_job(label, req.id, peer, long=True)
        job.cache_key, job.fingerprint, job.step_key, job.cancel = (
            (peer.key or "", req.id), req.fingerprint, step_key, cancel)
        self._by_request[job.cache_key] = job
        self.long_job = job
        assert self._long_worker is not None
        self._long_worker.submit(job, lambda: op.run(self.handlers, Call(req, peer, cancel)))

    def _new_job(self, label: str, rid: str, peer: Peer, long: bool) -> Job:
        self._next_job += 1
        job = Job(self._next_job, label, rid, [peer.identity], long)
        self._jobs[job.id] = job
        return job

    def _take_long_slot(self, op: Op, label: str) -> Optional[str]:
        """Take the long-op slot for ``label``; or why not (another long op runs, or ``op.blocked`` says)."""
        if not self.long_slot.try_take(label):
            what, seconds = self.long_slot.holder() or ("a long operation", 0.0)
            return f"{what} is running (for {seconds:.0f}s); try again later"
        blocked = op.blocked(self.handlers) if op.blocked is not None else None
        if blocked is not None:
            self.long_slot.release()
        return blocked


def _raising(exc: BaseException) -> Handler:
    """A handler that raises ``exc`` (so ``answer`` encodes it as the error reply it would have been)."""
    def handler() -> Any:
        raise exc
    return handler


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

