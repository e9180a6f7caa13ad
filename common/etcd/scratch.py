"""A throwaway single-member etcd on loopback, restored from a snapshot: for drills and point-in-time replays.

Proving a backup restorable, and replaying captured changes on top of one,
both need a real etcd serving the snapshot's data, away from the live
cluster: restored into a private scratch directory with a name, token and
peer URL of its own (it can never join the live cluster), listening on
127.0.0.1 only, with ``--unsafe-no-fsync`` where etcd has it (a scratch
store that dies is simply made again, so durability buys nothing). Everything
scratch is removed by ``close``: the process (proven gone) and the directory.

Why by hand: etcd ships no embeddable test server for Python; this is the
same `etcdutl snapshot restore` + `etcd` an operator would run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etcdguard.common.base.errors import EtcdguardError, ToolError
from etcdguard.common.base.polling import poll_until
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.snapshot.tools import SnapshotTool, failure_reason, restore_argv

NAME = "etcdguard-scratch"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
ATTEMPTS = 3          # a port picked free may be taken before etcd binds it: try again with others


class ScratchError(EtcdguardError):
    """The scratch etcd could not be made or did not serve."""


@dataclass(frozen=True)
class EtcdBinaries:
    """The etcd server and the restore tool a scratch member runs with."""

    etcd: Path
    tool: SnapshotTool

    def supports_unsafe_no_fsync(self) -> bool:
        return not self.tool.version.startswith("3.4")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScratchEtcd:
    """One scratch member: ``start`` restores ``snapshot`` and serves it; ``close`` removes everything."""

    def __init__(self, binaries: EtcdBinaries, parent: Optional[Path] = None, *, bump_revision: int = 0) -> None:
        self.binaries = binaries
        self.bump_revision = bump_revision
        self.dir = Path(tempfile.mkdtemp(prefix="etcdguard-scratch-", dir=str(parent) if parent else None))
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.endpoint = ""

    def start(self, snapshot: Path) -> EtcdClient:
        """Restore ``snapshot`` and start serving it; a client to it (the caller closes it)."""
        last = ""
        for _ in range(ATTEMPTS):
            client_port, peer_port = _free_port(), _free_port()
            peer = f"http://127.0.0.1:{peer_port}"
            data = self.dir / "data"
            shutil.rmtree(data, ignore_errors=True)
            self._restore(snapshot, data, peer)
            self.endpoint = f"http://127.0.0.1:{client_port}"
            self._launch(data, peer)
            try:
                return self._wait_serving()
            except ScratchError as exc:
                last = str(exc)
                self._stop()
        raise ScratchError(f"the scratch etcd did not serve after {ATTEMPTS} attempts: {last}")

    def _restore(self, snapshot: Path, data: Path, peer: str) -> None:
        argv = restore_argv(self.binaries.tool, snapshot, data, name=NAME, initial_cluster=f"{NAME}={peer}",
                            token=f"{NAME}-{os.getpid()}-{id(self)}", peer_url=peer,
                            bump_revision=self.bump_revision)
        out = subprocess.run(argv, env=self.binaries.tool.env(), capture_output=True, text=True, timeout=3600,
                             check=False)
        if out.returncode != 0:
            raise ToolError(f"{self.binaries.tool.kind} snapshot restore into the scratch dir failed: "
                            f"{failure_reason(out.stderr or out.stdout)}")

    def _launch(self, data: Path, peer: str) -> None:
        argv = [str(self.binaries.etcd), "--name", NAME, "--data-dir", str(data),
                "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{NAME}={peer}", "--log-level", "warn",
                # one member, no peers: it elects itself at once instead of after etcd's default second
                "--heartbeat-interval", "10", "--election-timeout", "100"]
        if self.binaries.supports_unsafe_no_fsync():
            argv.append("--unsafe-no-fsync")
        log = open(self.dir / "etcd.log", "ab")   # noqa: SIM115 - handed to the child, closed with it
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={"PATH": os.environ.get("PATH", "")})
        finally:
            log.close()

    def _wait_serving(self) -> EtcdClient:
        # the client port first: a gRPC channel that meets a closed port backs off for a second or more
        poll_until(self._port_open, START_TIMEOUT, interval=0.01, what="the scratch etcd's client port")
        client = EtcdClient(self.endpoint, timeout=2.0)

        def serving() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ScratchError(f"etcd exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                return client.status().healthy
            except EtcdguardError:
                return False

        try:
            poll_until(serving, START_TIMEOUT, interval=0.05, what="the scratch etcd to serve")
        except EtcdguardError:
            client.close()
            raise
        return client

    def _port_open(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ScratchError(f"etcd exited ({self.proc.returncode}): {self.log_tail()}")
        port = int(self.endpoint.rsplit(":", 1)[1])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "etcd.log").read_text(errors="replace")[-n:]
        return ""

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the process (proven: waited for) and remove the scratch directory."""
        self._stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ScratchEtcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def serving(binaries: EtcdBinaries, snapshot: Path, parent: Optional[Path] = None,
            bump_revision: int = 0) -> Iterator[tuple[ScratchEtcd, EtcdClient]]:
    """A scratch etcd serving ``snapshot`` for the block, and removed after it."""
    scratch = ScratchEtcd(binaries, parent, bump_revision=bump_revision)
    try:
        client = scratch.start(snapshot)
        try:
            yield scratch, client
        finally:
            client.close()
    finally:
        scratch.close()
