"""The coordinator's capture: read every change from one agent, write segments to the vault, fail over.

One thread. It picks the member whose agent captures (choice.py: a healthy
follower, kept while it stays healthy), reads that agent's captured changes
(``capture.read``, whole revisions, at most ``BATCH`` bytes a read; the
agent's session.py says why the coordinator pulls), and writes them to the
vault as segments every ``[continuous] flush`` or ``segment_size``
(pending.py). Each read continues from the last revision received, which
tells the agent everything before it is safe: so when that agent, its
member or its etcd goes away, another agent continues from exactly there,
with no gap and no duplicate; and when the coordinator restarts it resumes
from the vault's last segment.

Memory is bounded: at most ``MAX_PENDING`` bytes wait for the vault (a
vault that does not answer stops the reads, the agent then stops reading
etcd, and etcd keeps the history until it compacts it).

Where it starts for a cluster (a restore makes a new one): after the
cluster's last segment; with none, after its newest full snapshot in the
vault; with neither, at its current revision, and a full snapshot is taken
at once. When etcd compacted the history past where the capture stands,
the changes in between are lost: the capture records a gap (a segment of no
events naming the revisions it covers), counts it, logs it as an error and
has a full snapshot taken at once, which starts the window again. At a
fresh start nothing was promised yet, so a compaction there only moves the
start and asks for that snapshot. While a restore runs, the capture pauses
(what waits is written first).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.capture.segment import Event, SegmentError, encode
from etcdguard.coordinator.agents.links import AgentLink, MemberLinks
from etcdguard.coordinator.config import CoordinatorConfig
from etcdguard.coordinator.continuous.choice import choose_capturer
from etcdguard.coordinator.continuous.lag import SyncPoints
from etcdguard.coordinator.continuous.pending import Discontinuous, Pending, check_batch
from etcdguard.coordinator.vault.segments import is_base
from etcdguard.coordinator.vault.store import Vault

log = logging.getLogger(__name__)

BATCH = 2 << 20          # bytes asked for in one read
MAX_PENDING = 64 << 20   # bytes of changes waiting for the vault before reads pause
POLL = 0.2               # seconds between reads when the last one brought everything there was
RECHECK = 10.0           # seconds between checks that the capturing member is still healthy
AVOID = 30.0             # seconds a member whose capture failed is not chosen again
FAILURES = 2             # errors in a row before the capture moves to another member
IDLE_WAIT = 2.0


@dataclass(frozen=True)
class CaptureState:
    """What the capture does now, for status, metrics and logs."""

    enabled: bool = True
    running: bool = False             # reading from an agent, and the last read answered
    member: Optional[str] = None
    cluster_id: str = ""
    received: int = 0                 # the newest revision received
    written: int = 0                  # the newest revision the vault holds
    sentence: str = "starting"
    error: Optional[str] = None
    error_at: Optional[float] = None
    gaps: int = 0                     # gaps recorded since the coordinator started
    last_gap: Optional[tuple[int, int, float]] = None


@dataclass
class _Target:
    member: str
    client: AgentLink
    failures: int = 0
    checked: float = field(default_factory=time.monotonic)


class Capture:
    def __init__(self, *, config: Callable[[], CoordinatorConfig], links: Callable[[], MemberLinks],
                 vault: Callable[[], Vault], restoring: Callable[[], bool] = lambda: False,
                 snapshot_now: Callable[[str], None] = lambda why: None,
                 on_gap: Callable[[], None] = lambda: None) -> None:
        self._config = config
        self._links = links
        self._vault = vault
        self._restoring = restoring
        self._snapshot_now = snapshot_now
        self._on_gap = on_gap
        self._lock = threading.Lock()
        self._state = CaptureState()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._target: Optional[_Target] = None
        self._avoid: dict[str, float] = {}
        self._pending: Optional[Pending] = None
        self._fresh = False                  # no segment of this cluster yet: nothing promised
        self.sync = SyncPoints(time.time())

    # -- what others read ------------------------------------------------------
    @property
    def state(self) -> CaptureState:
        with self._lock:
            return self._state

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def lag(self) -> float:
        """Seconds since the vault last held every change etcd had (lag.py)."""
        return self.sync.lag(time.time())

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="continuous-capture", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, write what waits, and end the agent's watch."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._wait(self._cycle())
            except Exception as exc:   # a bug must not end continuous backup for good; it is logged
                log.exception("continuous backup: internal error")
                self._set(running=False, error=f"internal error: {exc!r} (see the coordinator's log)",
                          error_at=time.time())
                self._wait(IDLE_WAIT)
        self._pause("the coordinator stops")

    def _cycle(self) -> float:
        """One step; how long to wait before the next."""
        settings = self._config().continuous
        if not settings.enabled:
            self._pause("off ([continuous] enabled = false)")
            self._set(enabled=False)
            return IDLE_WAIT
        self._set(enabled=True)
        if self._restoring():
            self._pause("paused while a restore runs")
            return 1.0
        vault = self._vault()
        vault.segments.live_cluster = self.state.cluster_id or None   # a reload's new vault learns it too
        if not (vault.catalog.view().known and vault.segments.catalog.known):
            self._set(sentence="waiting for the vault's first listing")
            return 1.0
        if self._target is None and not self._open(vault):
            return IDLE_WAIT
        more = self._read(vault)
        self._write(vault, settings.flush, settings.segment_size)
        self._recheck()
        return 0.0 if more else POLL

    # -- choosing the member ---------------------------------------------------------
    def _open(self, vault: Vault) -> bool:
        config = self._config()
        views = self._links().survey(config.coordinator.request_timeout)
        now = time.monotonic()
        self._avoid = {m: until for m, until in self._avoid.items() if until > now}
        choice = choose_capturer(views, self.state.member, self._avoid)
        if choice.member is None:
            self._set(running=False, sentence=choice.sentence)
            return False
        if choice.cluster_id != self.state.cluster_id or self._pending is None:
            self._start_cluster(vault, choice.cluster_id, choice.revision)
        self._target = _Target(choice.member, self._links().dedicated(choice.member))
        log.info("continuous backup: %s, from revision %d", choice.sentence, self._position() + 1)
        self._set(member=choice.member, sentence=choice.sentence)
        return True

    def _start_cluster(self, vault: Vault, cluster_id: str, revision: int) -> None:
        """Where the capture of ``cluster_id`` starts (see the module's docstring)."""
        if self._pending is not None and self._pending.events:
            self._write(vault, 0.0, self._config().continuous.segment_size, force=True)
        segments = vault.segments.of_cluster(cluster_id)
        bases = [e.revision for e in vault.catalog.view().entries if is_base(e) and e.cluster_id == cluster_id]
        if segments:
            start, self._fresh = max(s.info.last for s in segments), False
        elif bases:
            start, self._fresh = max(bases), True
        else:
            start, self._fresh = revision, True
            self._snapshot_now(f"a first full snapshot of cluster {cluster_id}, where its capture starts")
        self._pending = Pending(start)
        self.sync.reset()
        vault.segments.live_cluster = cluster_id
        self._set(cluster_id=cluster_id, received=start, written=start)
        log.info("continuous backup: cluster %s is captured from revision %d (%s)", cluster_id, start + 1,
                 "after its last segment" if segments else "after its newest full snapshot" if bases
                 else "its current revision")

    def _position(self) -> int:
        assert self._pending is not None
        return self._pending.last

    def _drop(self, why: str, avoid: bool) -> None:
        """Stop capturing on the current member (it failed, or another cluster answers)."""
        target, self._target = self._target, None
        if target is None:
            return
        if avoid:
            self._avoid[target.member] = time.monotonic() + AVOID
        log.warning("continuous backup: moving off member %s: %s", target.member, why)
        target.client.close()
        self._set(running=False, member=None, sentence=f"moving off member {target.member}: {why}")

    def _pause(self, why: str) -> None:
        """Write what waits and end the agent's watch (a restore, a stop, continuous backup turned off)."""
        if self._pending is not None and self._pending.events:
            self._write(self._vault(), 0.0, self._config().continuous.segment_size, force=True)
        target, self._target = self._target, None
        if target is not None:
            try:
                target.client.call("capture.stop", {}, timeout=2.0, retries=0)
            except EtcdguardError as exc:
                log.info("continuous backup: member %s did not answer capture.stop: %s", target.member, exc)
            target.client.close()
        if self.state.sentence != why:
            self._set(running=False, member=None, sentence=why)

    def _recheck(self) -> None:
        """Every RECHECK seconds: the capturing member must still be healthy (a partitioned one serves a watch
        that says nothing of what the cluster writes)."""
        target = self._target
        if target is None or time.monotonic() - target.checked < RECHECK:
            return
        target.checked = time.monotonic()
        view = self._links().view(target.member, self._config().coordinator.request_timeout)
        if not view.healthy:
            self._drop(f"its etcd is not healthy now ({view.etcd.error or view.error or 'no leader'})", avoid=True)

    # -- reading ----------------------------------------------------------------
    def _failed(self, why: str, unreachable: bool = False) -> None:
        target = self._target
        assert target is not None
        target.failures += 1
        self._set(running=False, error=f"member {target.member}: {why}", error_at=time.time())
        if unreachable or target.failures >= FAILURES:
            self._drop(why, avoid=True)

    def _read(self, vault: Vault) -> bool:
        """One read from the capturing agent; whether more is waiting there."""
        from etcdguard.coordinator.agents.client import AgentUnreachable

        assert self._target is not None and self._pending is not None
        if self._pending.bytes >= MAX_PENDING:
            self._set(sentence=f"waiting for the vault ({self._pending.bytes} bytes of changes not written yet)")
            return False
        after = self._position()
        try:
            result, data = self._target.client.capture_read(after, BATCH, self._config().coordinator.request_timeout)
        except AgentUnreachable as exc:
            self._failed(str(exc), unreachable=True)
            return False
        except EtcdguardError as exc:
            self._failed(f"capture.read: {exc}")
            return False
        return self._accept(vault, after, result, data)

    def _accept(self, vault: Vault, after: int, result: dict[str, Any], data: bytes) -> bool:
        assert self._target is not None and self._pending is not None
        cluster = result.get("cluster_id")
        if cluster and cluster != self.state.cluster_id:
            self._drop(f"it serves cluster {cluster} now, not {self.state.cluster_id} (restored?)", avoid=False)
            return False
        if result.get("error"):
            self._failed(f"its watch of etcd ended: {result['error']}")
            return False
        try:
            events = parse_batch(data, self._target.member)
            last = int(result.get("last") or after)
            if events or last > after:
                check_batch(events, after, last)
        except (SegmentError, Discontinuous, ValueError) as exc:
            log.error("continuous backup: refused a batch from member %s: %s", self._target.member, exc)
            self._failed(f"refused its batch: {exc}")
            return False
        self._pending.add(events, time.monotonic())
        self._observe(result)
        self._target.failures = 0
        self._set(running=True, received=self._pending.last, error=None,
                  sentence=f"capturing on member {self._target.member}")
        compacted = result.get("compacted")
        if compacted:
            self._compacted(vault, after, int(compacted))
        return bool(result.get("more"))

    def _observe(self, result: dict[str, Any]) -> None:
        synced, age = result.get("synced_revision"), result.get("synced_age_ms")
        if isinstance(synced, int) and isinstance(age, int):
            self.sync.observe(synced, time.time() - age / 1000)
            assert self._pending is not None
            if not self._pending.events:
                self.sync.stored(self._pending.written)

    def _compacted(self, vault: Vault, after: int, compacted: int) -> None:
        """etcd no longer has the revisions after ``after`` up to ``compacted``."""
        assert self._pending is not None
        cluster = self.state.cluster_id
        if self._fresh:
            log.info("continuous backup: cluster %s is captured from revision %d: etcd compacted its history "
                     "before that (a full snapshot now starts the window)", cluster, compacted + 1)
            self._pending.skip_to(compacted)
            self._set(received=compacted, written=compacted)
            self._snapshot_now(f"etcd compacted cluster {cluster}'s history up to revision {compacted}, where its "
                               "capture starts")
            return
        if not self._write(vault, 0.0, self._config().continuous.segment_size, force=True):
            return                                   # the next read reports the compaction again
        member = self._target.member if self._target else ""
        info, data = encode([], cluster_id=cluster, member=member, first=after + 1, last=compacted, gap=True,
                            at_ms=int(time.time() * 1000))
        try:
            vault.segments.write(cluster, info, data)
        except EtcdguardError as exc:
            self._set(error=f"recording the gap {after + 1}..{compacted} in the vault: {exc}", error_at=time.time())
            return
        self._pending.skip_to(compacted)
        state = self.state
        self._set(received=compacted, written=compacted, gaps=state.gaps + 1,
                  last_gap=(after + 1, compacted, time.time()))
        self._on_gap()
        log.error("continuous backup: GAP: etcd compacted revisions %d..%d of cluster %s before the capture read "
                  "them; no point in between can be restored. Taking a full snapshot now.", after + 1, compacted,
                  cluster)
        self._snapshot_now(f"the capture of cluster {cluster} lost revisions {after + 1}..{compacted} to compaction")

    # -- writing ----------------------------------------------------------------------
    def _write(self, vault: Vault, flush: float, size: int, force: bool = False) -> bool:
        """Write the segments that are due (all that waits, with ``force``); False when the vault failed."""
        pending = self._pending
        if pending is None:
            return True
        while pending.events and (force or pending.due(time.monotonic(), flush, size)):
            first, last, events = pending.segment(size)
            member = self.state.member or ""
            info, data = encode(events, cluster_id=self.state.cluster_id, member=member, first=first, last=last)
            try:
                vault.segments.write(self.state.cluster_id, info, data)
            except EtcdguardError as exc:
                log.warning("continuous backup: segment %s not written: %s", info.name, exc)
                self._set(error=f"writing to the vault: {exc}", error_at=time.time())
                return False
            pending.written_through(last, time.monotonic())
            self.sync.stored(last)
            self._fresh = False          # the window reaches past here now: losing what follows is a gap
            self._set(written=last)
        return True


def parse_batch(data: bytes, member: str) -> list[Event]:
    """The events of a ``capture.read`` reply's data (segment lines); SegmentError if one is malformed."""
    out = []
    for i, line in enumerate(data.splitlines(), 1):
        try:
            value = json.loads(line)
        except ValueError:
            raise SegmentError(f"the batch from member {member}: line {i} is not JSON") from None
        out.append(Event.from_json(value, f"the batch from member {member}, line {i}"))
    return out
