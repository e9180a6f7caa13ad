"""One drill: a snapshot file restored into a scratch etcd on this host, asked, and everything scratch removed.

The scratch member (common/etcd/scratch.py) runs on 127.0.0.1 with a name,
token and peer URL of its own: it can never join the live cluster, and
nothing here talks to the live cluster at all. Once it serves, it is asked
its revision, its key count and its hashkv at that revision (compacted first
to the revision the member's hash counted from, where that is later than the
snapshot's own compaction, so the two hashes cover the same history), and a
sample of its keys, chosen evenly over the whole key space, is read back one
by one. When the block ends the process is killed and waited for and the
scratch directory removed; ``drill_file`` proves both before it returns.

``drill_file`` takes any snapshot file and the facts to prove it against,
so a file that was never in the vault (a point-in-time build, once one is
made) is drilled the same way as a vault entry.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import EtcdguardError, ToolError
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.etcd.scratch import EtcdBinaries, ScratchError, serving
from etcdguard.common.etcd.writes import EtcdWriter, KeyValue
from etcdguard.coordinator.drill.checks import DISK, RESTORE, SERVE, Check, Observed, Recorded, judge

log = logging.getLogger(__name__)

SAMPLE = 64               # keys read back one by one
PAGE = 1000               # keys listed per request while the sample is chosen
HEADROOM = 192 << 20      # beside the restored database: etcd's preallocated WAL (64 MiB) and the rest
CALL_TIMEOUT = 120.0      # hashkv and the count read every key: seconds on a large store

Phase = Callable[[str], None]


class DrillFailed(EtcdguardError):
    """A drill that could not get as far as comparing: ``reason`` is the failure metric's label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What a drill of a served store found, and what was proven gone afterwards."""

    checks: tuple[Check, ...]
    cleanup: str


def drill_file(binaries: EtcdBinaries, snapshot: Path, recorded: Recorded, parent: Path, *,
               sample: int = SAMPLE, phase: Phase = lambda _: None) -> Outcome:
    """Restore ``snapshot`` into a scratch etcd under ``parent``, judge it against ``recorded``, remove it.

    DrillFailed (with its reason) when there is no room, the restore tool
    refuses the file, or the scratch etcd does not serve or stops answering.
    """
    _ensure_room(parent, recorded.size)
    phase("restoring into a scratch etcd")
    try:
        with serving(binaries, snapshot, parent) as (scratch, client):
            where, pid = scratch.dir, scratch.proc.pid if scratch.proc is not None else 0
            phase(f"checking the restored store ({scratch.endpoint})")
            seen = observe(client, recorded, sample)
    except ToolError as exc:
        raise DrillFailed(RESTORE, f"the restore tool refused snapshot {recorded.sha256[:12]}: {exc}") from None
    except ScratchError as exc:
        raise DrillFailed(SERVE, f"snapshot {recorded.sha256[:12]} restored, but etcd did not serve it: "
                                 f"{exc}") from None
    except DrillFailed:
        raise
    except OSError as exc:
        raise DrillFailed(DISK, str(fsutil.disk_error(f"the scratch directory {parent}", exc))) from None
    except EtcdguardError as exc:
        raise DrillFailed(SERVE, f"the scratch etcd serving {recorded.sha256[:12]} stopped answering: {exc}") from None
    return Outcome(judge(recorded, seen), cleaned_up(where, pid))


def _ensure_room(parent: Path, size: int) -> None:
    try:
        fsutil.ensure_private_dir(parent)
        free = fsutil.free_bytes(parent)
    except OSError as exc:
        raise DrillFailed(DISK, str(fsutil.disk_error(f"the scratch directory {parent}", exc))) from None
    if free < size + HEADROOM:
        raise DrillFailed(DISK, f"the scratch directory {parent} has {free} bytes free; restoring a {size}-byte "
                                f"snapshot there needs {size + HEADROOM} (set [scratch] dir to a larger filesystem)")


def observe(client: EtcdClient, recorded: Recorded, sample: int = SAMPLE) -> Observed:
    """Ask the scratch etcd what it holds at its revision: count, hashkv (compacted to the member's
    compaction first, where that is later), and ``sample`` keys read back one by one."""
    revision = client.status().revision
    count = client.count(revision, timeout=CALL_TIMEOUT)
    hashed = client.hashkv_full(revision, timeout=CALL_TIMEOUT)
    target = recorded.hashkv_compact_revision
    if recorded.hashkv is not None and target is not None and hashed.compact_revision < target <= revision:
        # the member compacted between the snapshot and its hashkv: the same compaction here, so both hashes
        # count the same history (this store is scratch: nothing else reads it)
        EtcdWriter(client, CALL_TIMEOUT).compact(target)
        hashed = client.hashkv_full(revision, timeout=CALL_TIMEOUT)
    chosen = choose_sample(client, revision, sample)
    problems = read_back(client, revision, chosen)
    return Observed(revision=revision, key_count=count, hashkv=hashed.hash,
                    hashkv_compact_revision=hashed.compact_revision, sampled=len(chosen),
                    sample_problems=tuple(problems))


def choose_sample(client: EtcdClient, revision: int, n: int) -> list[KeyValue]:
    """``n`` keys chosen evenly over the whole key space (reservoir sampling over pages of key names, so
    memory stays at ``n`` keys and one page whatever the store holds); seeded by the revision."""
    writer = EtcdWriter(client, CALL_TIMEOUT)
    rng = random.Random(revision)
    chosen: list[KeyValue] = []
    seen = 0
    start = b"\0"
    while n > 0:
        _, page = writer.range(start, b"\0", revision, limit=PAGE, keys_only=True)
        for kv in page:
            seen += 1
            if len(chosen) < n:
                chosen.append(kv)
            elif (j := rng.randrange(seen)) < n:
                chosen[j] = kv
        if len(page) < PAGE:
            break
        start = page[-1].key + b"\0"
    return chosen


def read_back(client: EtcdClient, revision: int, chosen: list[KeyValue]) -> list[str]:
    """Read every chosen key on its own, with its value; what did not come back as listed."""
    writer = EtcdWriter(client, CALL_TIMEOUT)
    problems = []
    for kv in chosen:
        _, got = writer.range(kv.key, b"", revision)
        name = kv.key[:80].decode("utf-8", "replace")
        if len(got) != 1 or got[0].key != kv.key:
            problems.append(f"{name}: not found")
        elif got[0].mod_revision != kv.mod_revision or got[0].version != kv.version:
            problems.append(f"{name}: read back at mod revision {got[0].mod_revision}, listed at {kv.mod_revision}")
    return problems


def cleaned_up(where: Path, pid: int) -> str:
    """Prove the scratch member is gone: its process and its directory. The sentence says what was proven,
    or (logged as an error) what is left."""
    left = []
    if where.exists():
        left.append(f"its directory {where} is still there")
    if pid > 0:
        try:
            os.kill(pid, 0)
            left.append(f"its process {pid} still runs")
        except ProcessLookupError:
            pass
        except PermissionError:   # another user's process has that id now: ours is gone
            pass
    if left:
        log.error("drill: the scratch etcd was not removed: %s", "; ".join(left))
        return "NOT removed: " + "; ".join(left)
    return f"scratch etcd stopped (pid {pid} gone) and {where} removed"
