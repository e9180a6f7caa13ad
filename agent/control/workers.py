"""Running a request's handler and turning its outcome into reply frames, in or off the socket loop.

A ``Worker`` is a thread that runs handlers one at a time and pushes each
reply back to the socket loop over an inproc PUSH socket, because only the
loop may send on the ROUTER. A ``Job`` is what the loop remembers of a request
handed to a worker: who waits for its reply, and what a retry may join.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import zmq
from etcdguard.agent.control.transfer import NotFound
from etcdguard.common.base.errors import EXIT_UNSAFE, EtcdguardError, UsageError
from etcdguard.common.etcd.client import Cancellation
from etcdguard.common.wire.protocol import (
    BAD_REQUEST,
    FAILED,
    INTERNAL,
    NOT_FOUND,
    UNSAFE,
    ProtocolError,
    encode_error,
    encode_reply,
)

log = logging.getLogger(__name__)

Result = tuple[dict[str, Any], Optional[bytes]]
Handler = Callable[[], Result]


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


@dataclass
class Job:
    """A request handed to a worker: its reply goes to every identity in ``waiters``."""

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
    data_account: Optional[str] = None   # its reply carries a chunk, counted in this peer's fetch window


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
