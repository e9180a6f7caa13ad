"""The ops of the control channel, and the one table that says where each runs.

``OPS`` maps every op of the wire protocol to its lane and its handler:

- ``Lane.LOOP``: answered at once by the socket loop (reads that touch
  neither etcd nor a lock: ping, listings, chunk reads, restore records);
- ``Lane.STAGING``: uploads, answered by the loop too, whose reply is recorded
  so a retried request id gets it again instead of writing twice;
- ``Lane.STATUS``: the status worker (it may wait briefly for etcd);
- ``Lane.LONG``: the single long-op slot (snapshot.take, restore.step, etcd.admin); a
  second long op while one runs is refused with ``busy``.

Handlers take a ``Call`` (the validated request, the authenticated peer and,
for long ops, a cancellation) and return ``(result, data)``; they raise typed
errors, which the lane's runner turns into error replies.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.capture.manager import CaptureManager
from etcdguard.agent.config import AgentConfig
from etcdguard.agent.control.auth import key_label
from etcdguard.agent.control.status import StatusReporter
from etcdguard.agent.control.transfer import FetchFiles, NotFound, Staging
from etcdguard.agent.control.workers import Result
from etcdguard.agent.restore.records import restore_active, snapshot_in_use
from etcdguard.agent.restore.remote import RemoteRestore, operation_status
from etcdguard.agent.restore.warm import listing as warm_listing
from etcdguard.agent.snapshots.backup import BackupRunner
from etcdguard.agent.snapshots.bundle import read_chunk as read_bundle_chunk
from etcdguard.agent.snapshots.store import SnapshotStore
from etcdguard.common import __version__
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.base.slot import Slot
from etcdguard.common.etcd.client import Cancellation, EtcdClient
from etcdguard.common.wire.protocol import MAX_HEADER, Request

log = logging.getLogger(__name__)

REPLY_BUDGET = MAX_HEADER - 4096   # bytes of JSON a list-like result may use
STAGING_DIR = "staging"


class Lane(enum.Enum):
    LOOP = "socket loop"
    STAGING = "staging"
    STATUS = "status worker"
    LONG = "long-op worker"


@dataclass(frozen=True)
class Peer:
    """Who sent a request: the ROUTER identity, and the CURVE key ZAP authenticated (None: insecure)."""

    identity: bytes
    key: Optional[str]
    address: Optional[str]

    def describe(self) -> str:
        return key_label(self.key) if self.key else f"{self.address or 'unknown address'} (insecure)"

    @property
    def account(self) -> str:
        """The name its fetch window is counted under: its key, else (insecure) its connection."""
        return self.key or self.identity.hex()


@dataclass(frozen=True)
class Call:
    request: Request
    peer: Peer
    cancel: Optional[Cancellation] = None

    @property
    def args(self) -> dict[str, Any]:
        return self.request.args


def fit_list(items: list[dict[str, Any]], budget: int = REPLY_BUDGET) -> tuple[list[dict[str, Any]], bool]:
    """The longest prefix of ``items`` whose JSON fits ``budget`` bytes; and whether it was cut."""
    used = 2
    for i, item in enumerate(items):
        used += len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        if used > budget:
            return items[:i], True
    return items, False


class Handlers:
    """What each op does. The loop's handlers run in the socket loop thread, the others in their worker.

    ``runner`` returns the daemon's current BackupRunner (rebuilt on SIGHUP),
    so member, config and store are read through it on every request;
    ``long_op`` is the long-op worker's slot (it says what runs there now).
    """

    def __init__(self, config: AgentConfig, runner: Callable[[], Optional[BackupRunner]], long_op: Slot) -> None:
        self._initial_config = config
        self._runner_fn = runner
        self._long_op = long_op
        self.staging = Staging(config.state.dir / STAGING_DIR,
                               in_use=lambda path: snapshot_in_use(self.config().state.dir, path))
        self.fetch = FetchFiles(self.staging)
        self.staging.on_remove = self.fetch.forget
        self.restore = RemoteRestore(self.runner, self._snapshot_path,   # used by the long-op worker
                                     self.staging.verified_fingerprint)
        self.reporter = StatusReporter(self.runner, self.staging.dir, self._etcd_running)
        self.capture = CaptureManager(self._etcd_client)

    # -- what every handler reads through -------------------------------------
    def runner(self) -> BackupRunner:
        runner = self._runner_fn()
        if runner is None:
            raise EtcdguardError("the agent is still starting; try again")
        return runner

    def config(self) -> AgentConfig:
        runner = self._runner_fn()
        return runner.config if runner is not None else self._initial_config

    def store(self) -> SnapshotStore:
        runner = self._runner_fn()
        return runner.store if runner is not None else SnapshotStore(self._initial_config.backup.dir)

    def _snapshot_path(self, name: str) -> Path:
        """A staged upload, else a snapshot of the local store, by file name."""
        staged = self.staging.staged(name)
        if staged is not None:
            return staged[0]
        for meta in self.store().list():
            if meta.name == name:
                return Path(meta.path)
        raise NotFound(f"no staged upload or local snapshot named {name!r} on this node")

    def _etcd_client(self) -> EtcdClient:
        """A client of this node's etcd, for the capture's watch (it closes it)."""
        runner = self.runner()
        return EtcdClient(runner.member.endpoint, runner.member.tls, runner.config.etcd.dial_timeout)

    def _etcd_running(self) -> Optional[bool]:
        """Does this node's etcd process (as its runtime knows it) exist? None when that cannot be told."""
        try:
            return self.restore.engine().runtime.etcd.is_running()
        except (EtcdguardError, OSError):
            return None

    # -- socket loop ------------------------------------------------------------
    def ping(self, call: Call) -> Result:
        return {"pong": True, "version": __version__}, None

    def snapshot_list(self, call: Call) -> Result:
        """The local catalog, and the snapshots staged here (a restore's, or pre-staged for one)."""
        items, cut = fit_list([m.to_json() for m in self.store().list()], REPLY_BUDGET * 3 // 4)
        staged, cut_staged = fit_list(self.staging.completed(), REPLY_BUDGET // 4)
        runner = self._runner_fn()
        ready = warm_listing(runner.member.data_dir) if runner is not None else []
        result: dict[str, Any] = {"snapshots": items, "staged": staged, "warm": ready}
        if cut or cut_staged:
            result["truncated"] = True
        return result, None

    def snapshot_fetch(self, call: Call) -> Result:
        a = call.args
        return self.fetch.read(self.store(), a["name"], a["offset"], a["size"])

    @staticmethod
    def zstd_level(call: Call) -> Optional[int]:
        """The zstd level a fetch asks its chunk in (None: plain)."""
        level = call.args.get("zstd_level")
        return level if isinstance(level, int) else None

    def bundle_fetch(self, call: Call) -> Result:
        a = call.args
        return read_bundle_chunk(self.store(), a["name"], a["offset"], a["size"])

    def capture_read(self, call: Call) -> Result:
        result, data = self.capture.read(call.args["after"], call.args["size"])
        return result, data

    def capture_stop(self, call: Call) -> Result:
        return {"stopped": self.capture.stop_session()}, None

    def restore_status(self, call: Call) -> Result:
        result: dict[str, Any] = operation_status(self.config().state.dir, call.args["op_id"])
        result["journal_tail"] = fit_list(result["journal_tail"][::-1], REPLY_BUDGET // 2)[0][::-1]
        if fit_list([result["steps"]], REPLY_BUDGET // 2)[1]:
            result["steps"] = {}
            result["truncated"] = True
        return result, None

    # -- staging (socket loop, replies recorded) ----------------------------------
    def put(self, call: Call) -> Result:
        a = call.args
        if a["offset"] == 0 and not call.request.data:
            log.debug("snapshot.put probe for upload %s by %s", a["upload"], call.peer.describe())
        return self.staging.put(a, call.request.data or b""), None

    def put_abort(self, call: Call) -> Result:
        log.info("snapshot.put.abort of upload %s by %s", call.args["upload"], call.peer.describe())
        return self.staging.abort(call.args["upload"]), None

    # -- status worker --------------------------------------------------------------
    def status(self, call: Call) -> Result:
        return self.reporter.report(self._long_op.doing).to_json(), None

    def inspect(self, call: Call) -> Result:
        return self.reporter.inspect(call.args.get("hashkv_revision")), None

    # -- long-op worker ---------------------------------------------------------------
    def take(self, call: Call) -> Result:
        meta = self.runner().run_once(cancel=call.cancel, label="snapshot.take")
        return {"snapshot": meta.to_json()}, None

    def take_blocked(self) -> Optional[str]:
        """Why a snapshot cannot start now (beside the long-op slot being taken), or None."""
        runner = self._runner_fn()
        doing = runner.slot.doing if runner is not None else None
        if doing is not None:
            return f"the agent is taking a snapshot ({doing}); try again later"
        if restore_active(self.config().state.dir):
            return "a restore operation is in progress on this node"
        return None

    def restore_step(self, call: Call) -> Result:
        return self.restore.step(call.args, call.peer.describe()), None

    def restore_warm(self, call: Call) -> Result:
        return self.restore.warm(call.args), None

    def etcd_admin(self, call: Call) -> Result:
        from etcdguard.agent.etcd.admin import administer

        log.info("etcd.admin %s by %s", call.args["action"], call.peer.describe())
        return administer(self.runner().member, call.args), None

    def close(self) -> None:
        self.capture.close()
        self.fetch.close()
        self.staging.close()
        self.reporter.close()


def _step_label(req: Request) -> str:
    return f"restore.step {req.args['step']} of operation {req.args['op_id']}"


@dataclass(frozen=True)
class Op:
    """Where an op runs and what runs it.

    ``data``: its reply carries a chunk, counted in the peer's fetch window;
    ``compress``: (data ops) the zstd level the request asks its chunk in, if any: the loop reads the chunk,
    a compression worker compresses it and the loop sends it (server.py);
    ``label``: how logs and ``busy`` name a running long op;
    ``blocked``: (long ops) why it cannot start now, beside another long op running;
    ``cancellable``: (long ops) it takes a Cancellation that SIGTERM fires.
    """

    lane: Lane
    run: Callable[[Handlers, Call], Result]
    data: bool = False
    compress: Optional[Callable[[Call], Optional[int]]] = None
    label: Callable[[Request], str] = lambda req: req.op
    blocked: Optional[Callable[[Handlers], Optional[str]]] = None
    cancellable: bool = False


OPS: dict[str, Op] = {
    "ping": Op(Lane.LOOP, Handlers.ping),
    "snapshot.list": Op(Lane.LOOP, Handlers.snapshot_list),
    "snapshot.fetch": Op(Lane.LOOP, Handlers.snapshot_fetch, data=True, compress=Handlers.zstd_level),
    "bundle.fetch": Op(Lane.LOOP, Handlers.bundle_fetch, data=True),
    "restore.status": Op(Lane.LOOP, Handlers.restore_status),
    "capture.read": Op(Lane.LOOP, Handlers.capture_read, data=True),
    "capture.stop": Op(Lane.LOOP, Handlers.capture_stop),
    "snapshot.put": Op(Lane.STAGING, Handlers.put),
    "snapshot.put.abort": Op(Lane.STAGING, Handlers.put_abort),
    "status": Op(Lane.STATUS, Handlers.status),
    "etcd.inspect": Op(Lane.STATUS, Handlers.inspect),
    "snapshot.take": Op(Lane.LONG, Handlers.take, blocked=Handlers.take_blocked, cancellable=True),
    "restore.step": Op(Lane.LONG, Handlers.restore_step, label=_step_label),
    "restore.warm": Op(Lane.LONG, Handlers.restore_warm, blocked=Handlers.take_blocked,
                       label=lambda req: f"warm standby of {req.args['sha256'][:12]}"),
    "etcd.admin": Op(Lane.LONG, Handlers.etcd_admin, label=lambda req: f"etcd.admin {req.args['action']}"),
}
