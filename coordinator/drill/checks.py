"""What a drill proves, as data: the facts recorded at take time, what the restored store answered, and
one named check for each comparison, with the reason a failed drill is counted under (pure).

A snapshot proves itself restorable only against facts recorded before
anyone restored it: the member's revision, key count and hashkv at the
snapshot's revision, asked right after the snapshot was taken. A check
whose fact was not recorded (a snapshot of an older agent, a member that
had compacted past the revision) is reported as not checked, never as
passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from etcdguard.coordinator.vault.entry import VaultEntry

# The failure reasons (etcdguard_drill_failures_total's label), in the order a drill meets them.
TOOL = "tool"            # no scratch etcd on this host, or it cannot run
DISK = "disk"            # no room for the scratch data
VAULT = "vault"          # the copy could not be read back, or it is not the snapshot recorded (sha256)
RESTORE = "restore"      # the restore tool refused the snapshot
SERVE = "serve"          # the restored etcd did not start serving
REVISION = "revision"    # it serves another revision than the one recorded
KEY_COUNT = "key_count"  # it holds another number of keys
HASHKV = "hashkv"        # its keys and values hash otherwise
SAMPLE = "sample"        # keys it lists do not read back
OTHER = "other"
REASONS = (TOOL, DISK, VAULT, RESTORE, SERVE, REVISION, KEY_COUNT, HASHKV, SAMPLE, OTHER)

# The order checks are judged and reported in; the first that fails names the drill's reason.
SERVES, CHECKED_REVISION, CHECKED_KEYS, CHECKED_HASH, CHECKED_SAMPLE = (
    "serves", "revision", "key_count", "hashkv", "sample")


@dataclass(frozen=True)
class Recorded:
    """What was true of the snapshot when it was taken: what a drill proves the restored store against."""

    sha256: str
    size: int
    revision: int
    revision_exact: bool                    # False: ``revision`` is a lower bound (no etcdutl on the member)
    hashkv: Optional[int] = None
    hashkv_compact_revision: Optional[int] = None
    key_count: Optional[int] = None

    @classmethod
    def of(cls, entry: VaultEntry) -> Recorded:
        return cls(entry.sha256, entry.size, entry.revision, entry.revision_exact, entry.hashkv,
                   entry.hashkv_compact_revision, entry.key_count)


@dataclass(frozen=True)
class Observed:
    """What the scratch etcd answered about the restored store."""

    revision: int
    key_count: Optional[int] = None
    hashkv: Optional[int] = None
    hashkv_compact_revision: Optional[int] = None
    sampled: int = 0                        # keys read back one by one
    sample_problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """One comparison: ok True (passed), False (failed), None (not checked: the fact was not recorded)."""

    name: str
    ok: Optional[bool]
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def judge(recorded: Recorded, seen: Observed) -> tuple[Check, ...]:
    """Every check of a store that serves, in order (pure)."""
    return (Check(SERVES, True, f"the restored etcd serves revision {seen.revision}"),
            _revision(recorded, seen), _keys(recorded, seen), _hashkv(recorded, seen), _sample(recorded, seen))


def _revision(r: Recorded, s: Observed) -> Check:
    if not r.revision_exact:
        return Check(CHECKED_REVISION, None, f"not checked: revision {r.revision} was recorded as a lower bound "
                                             "(the member had no etcdutl/etcdctl to read the file)")
    if s.revision != r.revision:
        return Check(CHECKED_REVISION, False, f"the restored store is at revision {s.revision}, the snapshot was "
                                              f"recorded at {r.revision}")
    return Check(CHECKED_REVISION, True, f"revision {s.revision}, as recorded")


def _keys(r: Recorded, s: Observed) -> Check:
    if r.key_count is None or s.key_count is None:
        return Check(CHECKED_KEYS, None, "not checked: no key count was recorded when the snapshot was taken")
    if s.key_count != r.key_count:
        return Check(CHECKED_KEYS, False, f"the restored store holds {s.key_count} keys at revision {r.revision}, "
                                          f"the member held {r.key_count}")
    return Check(CHECKED_KEYS, True, f"{s.key_count} keys, as recorded")


def _hashkv(r: Recorded, s: Observed) -> Check:
    if r.hashkv is None or s.hashkv is None:
        return Check(CHECKED_HASH, None, "not checked: hashkv was not recorded when the snapshot was taken")
    if (r.hashkv_compact_revision is not None and s.hashkv_compact_revision is not None
            and s.hashkv_compact_revision != r.hashkv_compact_revision):
        return Check(CHECKED_HASH, False, f"the restored store is compacted at revision {s.hashkv_compact_revision}, "
                                          f"the member's hash counted from {r.hashkv_compact_revision}: the hashes "
                                          "cannot be compared")
    if s.hashkv != r.hashkv:
        return Check(CHECKED_HASH, False, f"hashkv at revision {r.revision} is {s.hashkv}, the member's was "
                                          f"{r.hashkv}: the snapshot does not hold the data it was taken with")
    return Check(CHECKED_HASH, True, f"hashkv {s.hashkv} at revision {r.revision}, as recorded")


def _sample(r: Recorded, s: Observed) -> Check:
    if s.sample_problems:
        shown = "; ".join(s.sample_problems[:3]) + ("; ..." if len(s.sample_problems) > 3 else "")
        return Check(CHECKED_SAMPLE, False, f"{len(s.sample_problems)} of {s.sampled} sampled keys did not read "
                                            f"back: {shown}")
    if s.sampled == 0 and (s.key_count or r.key_count):
        return Check(CHECKED_SAMPLE, False, "the store counts keys but listed none to read back")
    return Check(CHECKED_SAMPLE, True, f"{s.sampled} sampled keys read back with their values")


_REASON_OF = {SERVES: SERVE, CHECKED_REVISION: REVISION, CHECKED_KEYS: KEY_COUNT, CHECKED_HASH: HASHKV,
              CHECKED_SAMPLE: SAMPLE}


def reason_of(checks: Sequence[Check]) -> Optional[str]:
    """The reason the first failed check names (None: every check passed or was not checked)."""
    for c in checks:
        if c.ok is False:
            return _REASON_OF.get(c.name, OTHER)
    return None


@dataclass(frozen=True)
class DrillResult:
    """One drill of one vault entry (or built file): what was checked and how it ended."""

    sha256: str
    kind: str
    revision: int
    started_at: float             # unix seconds
    seconds: float
    ok: bool
    reason: Optional[str]         # REASONS, when it failed
    message: str                  # one sentence for the operator
    checks: tuple[Check, ...] = ()
    cleanup: str = ""             # what was proven gone afterwards
    unchecked: tuple[str, ...] = field(default=())   # checks whose facts were not recorded

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [c.to_json() for c in self.checks]
        data["unchecked"] = list(self.unchecked)
        return data

    @classmethod
    def from_json(cls, data: Any) -> DrillResult:
        """Read a recorded result; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a drill result is not a JSON object")
        try:
            checks = tuple(Check(str(c["name"]), c["ok"] if c["ok"] in (True, False, None) else None,
                                 str(c["detail"])) for c in data.get("checks", []))
            return cls(sha256=str(data["sha256"]), kind=str(data.get("kind", "")), revision=int(data["revision"]),
                       started_at=float(data["started_at"]), seconds=float(data["seconds"]), ok=bool(data["ok"]),
                       reason=str(data["reason"]) if data.get("reason") is not None else None,
                       message=str(data["message"]), checks=checks, cleanup=str(data.get("cleanup", "")),
                       unchecked=tuple(str(u) for u in data.get("unchecked", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a drill result lacks or mistypes {exc}") from None


def verdict(sha256: str, checks: Sequence[Check]) -> tuple[bool, Optional[str], str]:
    """(ok, reason, the operator's sentence) of a drill whose store served (pure)."""
    reason = reason_of(checks)
    unchecked = [c.name for c in checks if c.ok is None]
    if reason is not None:
        failed = next(c for c in checks if c.ok is False)
        return False, reason, f"snapshot {sha256[:12]} is not restorable as recorded: {failed.detail}"
    note = f" ({', '.join(unchecked)} not recorded at take time, not checked)" if unchecked else ""
    return True, None, f"snapshot {sha256[:12]} restored, served and matched what was recorded{note}"
