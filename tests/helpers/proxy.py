"""A throttling TCP proxy on 127.0.0.1, to make a snapshot stream slow enough to interrupt."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Optional


class SlowProxy:
    """Forwards 127.0.0.1:<port> to a target, limiting server->client bytes per second."""

    def __init__(self, target_port: int, bytes_per_second: int) -> None:
        self.target_port = target_port
        self.rate = bytes_per_second
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for src, dst, limit in ((client, upstream, 0), (upstream, client, self.rate)):
                t = threading.Thread(target=self._pump, args=(src, dst, limit), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int) -> None:
        chunk = 16384 if not limit else max(1024, limit // 20)
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if limit:
                    time.sleep(len(data) / limit)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to a target until ``limit`` client->server bytes have passed, then cuts every
    connection and refuses new ones: a server that becomes unreachable in the middle of an upload."""

    def __init__(self, target_port: int, limit: int) -> None:
        self.target_port = target_port
        self.limit = limit
        self.sent = 0
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        with contextlib.suppress(OSError):
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if counted:
                    with self._lock:
                        self.sent += len(data)
                        over = self.sent >= self.limit
                    if over:
                        self._cut()
                        return
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        self.cut.set()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:   # shutdown wakes a thread blocked in recv and sends the FIN; close alone does not
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for s in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._cut()


class SwitchProxy:
    """Forwards 127.0.0.1:<port> to a target, or stands for an endpoint in trouble, as the test switches it:

    - ``forward()``: a working endpoint;
    - ``hang()``: accepts connections and never answers (nor reads past the kernel's buffers): what a
      wedged load balancer or a black-holed route looks like;
    - ``refuse()``: accepts and closes at once: an endpoint that is down;
    - ``cut_after(n)``: forwards until ``n`` more client->server bytes have passed, then refuses (an
      outage in the middle of an upload); ``cut`` is set then;
    - ``cut_on(marker)``: the same, when the client sends ``marker`` (b"PUT /": at the next upload).

    A switch away from forwarding cuts every forwarded connection, so pooled keep-alive connections do
    not go on working past it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "forward"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._budget: Optional[int] = None
        self._marker: Optional[bytes] = None
        self.cut = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def forward(self) -> None:
        self._switch("forward")

    def cut_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes
            self.cut.clear()

    def cut_on(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker
            self.cut.clear()

    def hang(self) -> None:
        self._switch("hang")

    def refuse(self) -> None:
        self._switch("refuse")

    def _switch(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            sockets, self._sockets = self._sockets, []
            held, self._held = (self._held, []) if mode != "hang" else ([], self._held)
        for s in [*sockets, *held]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                mode = self.mode
                if mode == "hang":
                    self._held.append(client)
                    continue
            if mode == "refuse":
                with contextlib.suppress(OSError):
                    client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, counted), daemon=True).start()

    def _spend(self, data: bytes) -> bool:
        """Count client->server bytes; True when they used up a ``cut_after`` budget or carry the marker."""
        with self._lock:
            if self._marker is not None and self._marker in data:
                self._marker = None
            elif self._budget is not None and self._budget - len(data) <= 0:
                self._budget = None
            else:
                if self._budget is not None:
                    self._budget -= len(data)
                return False
        self.cut.set()
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counted and self._spend(data):
                    self._switch("refuse")
                    return
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._switch("refuse")
        with contextlib.suppress(OSError):
            self._listener.close()
