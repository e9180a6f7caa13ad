"""The vault: the coordinator's off-node copy of snapshots, on one backend, optionally age-encrypted.

Content-addressed by sha256: the same snapshot offered twice is stored once,
and the catalog is the backend's listing (a directory, or a bucket whose
object names carry the metadata), with no separate index to corrupt. The
backend (backends.py: a directory; s3.py: S3-compatible object storage)
stores and lists bytes; this class decides what those bytes are:

- a pull lands in a temp file (in the vault directory for a plain directory
  vault, so it is renamed in; otherwise in the coordinator's work directory),
  is checked (size, sha256 end to end, etcd's trailer) and only then saved.
  With ``encrypt_to`` the save streams through ``age``: no plaintext byte is
  written to the backend, and a failed encryption or upload saves nothing;
- every read re-checks the sha256 of the plaintext against the one the
  entry's name (or sidecar) and the object's metadata record;
- a restore's plan checks the copy it would restore (``verify_copy``)
  against the fingerprint the coordinator recorded in its own state when it
  stored or last verified it (verified.py), and verifies a copy it has no
  record of in full, once: a rewritten, metadata-less or undecryptable copy
  is refused before anything is pinned, stopped or staged;
- retention keeps pinned entries (a pin carries its reason, e.g.
  ``pre-restore``) and the ``keep`` newest others.

The contract the cluster restore relies on: ``list()`` (newest first),
``resolve(ref)``, ``has(sha)``, ``pin``/``unpin``, ``add_file(path, incoming,
pin=None)`` and ``materialize(entry)``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import IO, Callable, Optional, Union

from etcdguard.common.base import agekeys, fsutil, retention
from etcdguard.common.base.errors import EtcdguardError, SnapshotCorrupt, UsageError
from etcdguard.common.snapshot import compression as compress
from etcdguard.common.snapshot.integrity import TrailerHasher, verify_file, verify_restorable
from etcdguard.coordinator.vault import names
from etcdguard.coordinator.vault.backends import (
    BUNDLE,
    SNAPSHOT,
    DirStore,
    SnapStore,
    VaultBackendError,
    VaultDiskError,
    ensure_space,
)
from etcdguard.coordinator.vault.catalog import Catalog, Listing
from etcdguard.coordinator.vault.entry import (
    MIN_PREFIX,
    Incoming,
    VaultEntry,
    newest_first,
    newest_first_key,
    resolve_ref,
    same_data,
)
from etcdguard.coordinator.vault.segments import SegmentVault
from etcdguard.coordinator.vault.segstore import segment_objects
from etcdguard.coordinator.vault.verified import (
    UPLOADED,
    VERIFIED,
    Fingerprint,
    ObjectRecords,
    ObjectStat,
    fingerprint_problem,
    metadata_problem,
)

__all__ = ["MIN_PREFIX", "Incoming", "Vault", "VaultBackendError", "VaultDiskError", "VaultEntry",
           "newest_first", "newest_first_key", "resolve_ref"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20

# fetch(dest) writes a verified file at dest or raises, leaving no dest; it returns how it wrote the
# snapshot: "zstd" (as zstd frames, compression.py) or None/"" (the snapshot itself).
Fetcher = Callable[[Path], Optional[str]]
# on_failure(op, reason): count a backend failure (the daemon's metrics).
FailureHook = Callable[[str, str], None]


def verify_frames(path: Path, sha256: str, size: int) -> None:
    """SnapshotCorrupt unless the zstd frames in ``path`` decompress to the snapshot ``sha256`` of ``size``
    bytes, with etcd's SHA-256 trailer intact."""
    digest = TrailerHasher()
    with open(path, "rb") as fh:
        reader = compress.decompressing(fh)
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            digest.update(data)
    if digest.size != size or digest.sha256 != sha256:
        raise SnapshotCorrupt(f"{path} decompresses to {digest.size} bytes with sha256 {digest.sha256[:16]}, "
                              f"expected {size} bytes with sha256 {sha256[:16]}")
    digest.check(str(path))


class Vault:
    """List, add, resolve, pin, read back and prune snapshots on one backend."""

    def __init__(self, store: Union[Path, SnapStore], *, encrypt_to: Sequence[str] = (),
                 identity: Optional[Path] = None, work_dir: Optional[Path] = None,
                 on_failure: Optional[FailureHook] = None, records: Optional[ObjectRecords] = None,
                 compression: str = "", level: int = compress.DEFAULT_LEVEL) -> None:
        self.store: SnapStore = DirStore(store) if isinstance(store, Path) else store
        self.recipients = tuple(encrypt_to)
        self.identity = identity
        if compression not in ("", compress.ZSTD):
            raise ValueError(f"compression {compression!r} is not 'zstd' or ''")
        self.compression = compression   # how new objects are stored: "zstd", or "" (the snapshot itself)
        self.level = level
        plain_dir = isinstance(self.store, DirStore) and not self.recipients
        if work_dir is None:
            if not plain_dir:
                raise ValueError("a vault that encrypts or is not a plain directory needs a work_dir")
            assert isinstance(self.store, DirStore)
            work_dir = self.store.dir
        self.work_dir = work_dir
        self.on_failure = on_failure
        self.records = records   # the copies' fingerprints, in the coordinator's own state (verified.py)
        self.fresh_as_of: Optional[float] = None   # newest data the backend was seen to hold
        # When the backend last confirmed holding every copy the coordinator made: an upload completed,
        # or a listing answered while no upload is pending (``unsaved``: one failed and nothing replaced it).
        # A listing alone must not confirm a copy that never arrived (etcdguard_vault_offsite_age_seconds).
        self.seen_at: Optional[float] = None
        self.unsaved: Optional[str] = None         # sha256 of a snapshot whose upload failed, until one succeeds
        self.catalog = Catalog()   # the last listing, for answers that must not wait on the backend
        # continuous backup's segments, on the same backend and encrypted the same way
        self.segments = SegmentVault(segment_objects(self.store), recipients=self.recipients, identity=identity,
                                     on_failure=on_failure)
        self.prepared = False
        # Retention and pins: an entry pinned while retention decides is never deleted.
        self._lock = threading.Lock()

    # -- what it is ----------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.store.name

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def dir(self) -> Path:
        """The directory of a directory vault (what the vault was before it had backends)."""
        if not isinstance(self.store, DirStore):
            raise UsageError(f"the vault is {self.location}, not a directory")
        return self.store.dir

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    @property
    def zstd_level(self) -> Optional[int]:
        """The zstd level new objects are compressed at; None when they are stored uncompressed."""
        return self.level if self.compression == compress.ZSTD else None

    def data_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.db"

    def meta_path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.json"

    def _failed(self, exc: BaseException, op: str) -> None:
        if self.on_failure is None:
            return
        if isinstance(exc, VaultBackendError):
            self.on_failure(exc.op, exc.reason)
        elif isinstance(exc, agekeys.AgeError):
            self.on_failure(op, "decrypt" if op == "download" else "other")
        elif isinstance(exc, SnapshotCorrupt):
            self.on_failure(op, "checksum")
        elif isinstance(exc, OSError):
            self.on_failure(op, "disk")

    @contextlib.contextmanager
    def _counting(self, op: str) -> Iterator[None]:
        try:
            yield
        except (EtcdguardError, OSError) as exc:
            self._failed(exc, op)
            raise

    # -- opening -----------------------------------------------------------
    def prepare(self) -> builtins.list[PurePath]:
        """Open the backend (remove leftovers of interrupted saves) and clear the work directory."""
        try:
            if self.work_dir != getattr(self.store, "dir", None):
                fsutil.ensure_private_dir(self.work_dir)
                for path in fsutil.remove_stale_temps(self.work_dir):
                    log.info("vault: removed a leftover temp file %s", path)
            with self._counting("list"):
                removed = self.store.prepare()
            self.prepared = True
            return removed
        except OSError as exc:
            reason = "denied" if exc.errno in (errno.EACCES, errno.EPERM) else "disk"
            raise VaultBackendError(str(fsutil.disk_error(f"cannot open the vault {self.location}", exc)), "list",
                                    reason) from None

    def refresh(self) -> Listing:
        """Open the backend if that has not worked yet, then list it into the catalog; a failure is
        recorded in the catalog (and logged), not raised. What the background lister runs."""
        before = self.catalog.view().error
        try:
            if not self.prepared:
                try:
                    self.prepare()
                except (EtcdguardError, OSError) as exc:
                    self.catalog.failed(str(exc))   # the listing it stands for failed
                    raise
            self.list()
            self.segments.refresh()
        except (EtcdguardError, OSError) as exc:
            if str(exc) != before:   # an outage logs once, not at every listing
                log.error("vault: %s", exc)
            return self.catalog.view()
        if self.store.leftovers:   # it answers again: abort what an upload cut by the outage left
            self.sweep()
        return self.catalog.view()

    def sweep(self, now: Optional[float] = None) -> builtins.list[PurePath]:
        """Abort incomplete uploads the backend holds (backends.SnapStore.sweep); a failure is logged and
        counted, not raised: the next sweep tries again."""
        try:
            with self._counting("delete"):
                return self.store.sweep(now)
        except VaultBackendError as exc:
            log.warning("vault: incomplete uploads were not swept: %s", exc)
            return []

    # -- reading -----------------------------------------------------------
    def list(self) -> builtins.list[VaultEntry]:
        """Catalog entries, newest first: by revision within a cluster, not by clocks (entry.newest_first).

        Asks the backend; the result (or the failure) goes to ``catalog``."""
        started = self.catalog.asking()
        try:
            with self._counting("list"):
                entries = newest_first(self.store.list())
        except (EtcdguardError, OSError) as exc:
            self.catalog.failed(str(exc))
            raise
        self.catalog.answered(entries, started)
        self._confirmed(e.sha256 for e in entries)
        return entries

    def _confirmed(self, shas: Iterable[str]) -> None:
        """The backend answered with ``shas``: it holds every copy made, unless an upload is pending."""
        if self.unsaved is not None and self.unsaved in set(shas):
            self.unsaved = None   # it arrived after all (its answer was what was lost)
        if self.unsaved is None:
            self.seen_at = time.time()

    def newest(self) -> Optional[VaultEntry]:
        items = self.list()
        return items[0] if items else None

    def newest_cached(self) -> Optional[VaultEntry]:
        """The newest entry of the last listing, without asking the backend (status lines)."""
        return self.catalog.view().newest()

    def has(self, sha256: str) -> Optional[VaultEntry]:
        with self._counting("list"):
            found = self.store.get(sha256)
        if found is not None and sha256 == self.unsaved:
            self._confirmed([sha256])
        return found

    def resolve(self, ref: str) -> VaultEntry:
        """``latest`` or a unique sha256 prefix; UsageError (exit 2) otherwise."""
        return resolve_ref(self.list(), ref, f"the vault ({self.location})")

    def total_bytes(self) -> int:
        return sum(e.size for e in self.list())

    def holds_same(self, incoming: Incoming) -> Optional[VaultEntry]:
        """An entry with the same data as ``incoming`` (same cluster and exact revision), if any."""
        dup = same_data(self.list(), incoming.cluster_id, incoming.revision, incoming.revision_exact)
        if dup is not None:
            self.confirm_current(incoming.created_unix)
        return dup

    def confirm_current(self, created_unix: float) -> None:
        """The backend was seen to hold data as fresh as a snapshot taken at ``created_unix``."""
        self.fresh_as_of = max(self.fresh_as_of or 0.0, created_unix)

    # -- writing -----------------------------------------------------------
    def pull(self, incoming: Incoming, fetch: Fetcher, verify: bool = False,
             now: Optional[Callable[[], float]] = None) -> tuple[VaultEntry, bool]:
        """Add a snapshot unless the vault has it; return (entry, pulled).

        ``fetch(temp)`` writes the snapshot at a temp path (verified end to
        end) or raises leaving nothing behind. The temp is then checked for
        size (and, with ``verify``, re-hashed) and saved. Any failure removes
        the temp: a failed pull never appears in the catalog.
        """
        existing = self.has(incoming.sha256)
        if existing is not None:
            return existing, False
        clock = now or time.time
        with self._counting("upload"):
            ensure_space(self.work_dir, incoming.size, "vault work directory")
            self.store.ensure_space(incoming.size)
        temp = fsutil.temp_path(self.work_dir)
        packed: Optional[Path] = None
        try:
            encoding = fetch(temp) or ""
            if encoding == compress.ZSTD:
                if verify:
                    verify_frames(temp, incoming.sha256, incoming.size)
            else:
                size = temp.stat().st_size
                if size != incoming.size:
                    raise SnapshotCorrupt(f"received {size} bytes of {incoming.original_name} from member "
                                          f"{incoming.source_member}, expected {incoming.size}")
                if verify:
                    verify_file(temp, incoming.sha256, incoming.size)
                if self.zstd_level is not None:   # the source sent it plain: compressed here
                    packed = self._compressed_copy(temp, incoming)
                    encoding = compress.ZSTD
            entry = self._save(packed or temp, incoming, clock(), encoding)
        finally:
            for path in (temp, packed):
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        self.confirm_current(incoming.created_unix)
        return entry, True

    def _compressed_copy(self, plain: Path, incoming: Incoming) -> Path:
        """``plain`` as zstd frames in a temp file beside it, checked against the snapshot as it is read."""
        out = fsutil.temp_path(self.work_dir, "zst")
        digest = TrailerHasher()
        try:
            with open(plain, "rb") as src, fsutil.atomic_writer(out) as dest:
                compress.compress_stream(src, dest, self.level, content=digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()
            raise
        if digest.sha256 != incoming.sha256 or digest.size != incoming.size:
            out.unlink()
            raise SnapshotCorrupt(f"{incoming.original_name} changed while it was being compressed")
        return out

    def _save(self, temp: Path, incoming: Incoming, pulled_unix: float, compression: str = "") -> VaultEntry:
        entry = incoming.entry(pulled_unix, encrypted=self.encrypted, compression=compression)
        try:
            with self._counting("upload"):
                if self.recipients:
                    with agekeys.encrypting(temp, self.recipients) as stream:
                        self.store.save(entry, SNAPSHOT, stream)
                else:
                    os.chmod(temp, 0o600)
                    self.store.save(entry, SNAPSHOT, temp)
        except BaseException:
            self.unsaved = entry.sha256
            raise
        self.unsaved = None
        self.seen_at = time.time()
        self._record(entry, UPLOADED)
        stored = self.store.get(entry.sha256) or entry
        self.catalog.put(stored)
        log.info("vault: stored %s (%d bytes, revision %d%s%s) from member %s in %s", incoming.sha256[:16],
                 incoming.size, incoming.revision, f", {stored.stored_size} bytes compressed" if compression else "",
                 ", age-encrypted" if self.encrypted else "", incoming.source_member, self.location)
        return stored

    def add_file(self, path: Path, incoming: Incoming, pin: Optional[str] = None,
                 now: Optional[float] = None) -> tuple[VaultEntry, bool]:
        """Copy a local, verified snapshot file into the vault (sha256, size and trailer checked).

        With ``pin`` (a reason, e.g. ``pre-restore``) the entry is pinned, also
        when the vault already had it.
        """
        def copy(dest: Path) -> Optional[str]:
            with open(path, "rb") as src, fsutil.atomic_writer(dest) as out:
                if self.zstd_level is None:
                    agekeys.copy_stream(src, out)
                    return None
                compress.compress_stream(src, out, self.zstd_level)
                return compress.ZSTD

        entry, pulled = self.pull(incoming, copy, verify=True, now=(lambda: now) if now is not None else None)
        if pin is not None:
            entry = self.pin(entry.sha256, pin)
        return entry, pulled

    def add_bundle(self, entry: VaultEntry, path: Path) -> VaultEntry:
        """Store an agent's node bundle beside ``entry``; refused unless it is age-encrypted."""
        with open(path, "rb") as fh:
            if not agekeys.is_age_file(fh.read(len(agekeys.AGE_MAGIC))):
                raise UsageError(f"refused to store the bundle of {entry.sha256[:12]}: it is not age-encrypted")
        with self._counting("upload"):
            self.store.save(entry, BUNDLE, path)
        self.catalog.put(entry.with_(bundle=True))
        return entry.with_(bundle=True)

    # -- pins ----------------------------------------------------------------
    def pin(self, sha256: str, reason: str) -> VaultEntry:
        """Keep an entry whatever retention says; ``reason`` is shown in listings."""
        problem = names.check_reason(reason)
        if problem is not None:
            raise UsageError(problem)
        with self._lock:
            entry = self._get(sha256)
            with self._counting("upload"):
                self.store.set_pin(sha256, reason)
        log.info("vault: pinned %s (%s)", sha256[:16], reason)
        self.catalog.put(entry.with_(pinned=reason))
        return entry.with_(pinned=reason)

    def unpin(self, sha256: str) -> VaultEntry:
        entry = self._get(sha256)
        if entry.pinned is not None:
            with self._counting("delete"):
                self.store.set_pin(sha256, None)
            log.info("vault: unpinned %s (was: %s)", sha256[:16], entry.pinned)
        self.catalog.put(entry.with_(pinned=None))
        return entry.with_(pinned=None)

    def pinned(self, sha256: str) -> Optional[str]:
        """The pin's reason, or None."""
        entry = self.has(sha256)
        return entry.pinned if entry is not None else None

    def _get(self, sha256: str) -> VaultEntry:
        entry = self.has(sha256)
        if entry is None:
            raise UsageError(f"no snapshot {sha256[:16]} in the vault ({self.location})")
        return entry

    # -- reading back ----------------------------------------------------------
    @contextlib.contextmanager
    def _plaintext(self, entry: VaultEntry, kind: str = SNAPSHOT) -> Iterator[compress.Reader]:
        """The entry's snapshot (or bundle): its bytes as stored, decrypted when they are encrypted and
        decompressed when they are compressed."""
        with self._decrypted(entry, kind) as stored:
            if kind == SNAPSHOT and entry.compression == compress.ZSTD:
                yield compress.decompressing(stored)
            elif kind == SNAPSHOT and entry.compression:
                raise UsageError(f"{entry.sha256[:12]} is stored with compression {entry.compression!r}, which this "
                                 "coordinator cannot read")
            else:
                yield stored

    @contextlib.contextmanager
    def _decrypted(self, entry: VaultEntry, kind: str) -> Iterator[compress.Reader]:
        """The entry's bytes as stored, decrypted when they are encrypted."""
        with self.store.open_read(entry, kind) as raw:
            if not (entry.encrypted or kind == BUNDLE):
                yield raw
                return
            if self.identity is None:
                raise UsageError(f"{entry.sha256[:12]} is age-encrypted and [vault] age_identity is not set: "
                                 "give the coordinator the identity (secret key) of one of its recipients")
            with agekeys.decrypting(raw, self.identity, f"decrypting {entry.sha256[:12]}") as plain:
                yield plain   # type: ignore[misc]

    def _write_verified(self, entry: VaultEntry, out: IO[bytes]) -> None:
        """Copy the plaintext into ``out``, hashing; SnapshotCorrupt unless sha256 and size match."""
        digest = hashlib.sha256()
        size = 0
        with self._counting("download"), self._plaintext(entry) as src:
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                digest.update(data)
                out.write(data)
                size += len(data)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            exc = SnapshotCorrupt(f"vault object of {entry.sha256[:16]} ({self.location}) reads back as {size} "
                                  f"bytes with sha256 {digest.hexdigest()[:16]}, expected {entry.size} bytes "
                                  f"with sha256 {entry.sha256[:16]}: it was altered or damaged; refused")
            self._failed(exc, "download")
            raise exc

    def check(self, entry: VaultEntry) -> Optional[str]:
        """None when the backend lists ``entry`` and the coordinator holds what decrypts it; else the problem.

        The first, cheap part of ``verify_copy``: nothing is read here.
        """
        try:
            held = self.has(entry.sha256)
        except VaultBackendError as exc:
            return str(exc)
        if held is None:
            return f"{entry.sha256[:12]} is no longer in the vault ({self.location})"
        if held.encrypted and self.identity is None:
            return (f"{entry.sha256[:12]} is age-encrypted and [vault] age_identity is not set: the coordinator "
                    "cannot read it back")
        return None

    # -- verifying a copy for a restore -------------------------------------------
    def _record(self, entry: VaultEntry, how: str) -> None:
        """Remember the fingerprint of ``entry``'s copy as it is now (stored or verified by this coordinator)."""
        if self.records is None:
            return
        try:
            stat = self.store.stat(entry)
        except (EtcdguardError, OSError) as exc:   # not recorded: the next plan verifies it in full
            log.warning("vault: cannot record the copy of %s: %s", entry.sha256[:16], exc)
            return
        if stat is not None:
            self.records.put(self.location, entry.sha256, Fingerprint.of(stat, how))

    def verify_copy(self, entry: VaultEntry) -> Optional[str]:
        """None when the backend's copy of ``entry`` is provably the snapshot the vault recorded; else the
        problem, which a restore's plan refuses (exit 3) before anything is pinned, stopped or staged.

        Without downloading: the copy is there, the identity to decrypt it is
        set, its metadata records the snapshot's sha256 (and size), and its
        fingerprint (S3: ETag and size) is the one the coordinator recorded when
        it stored or last verified it. A copy with no record is downloaded,
        decrypted, and checked in full (sha256, size, the etcd snapshot's
        trailer and meta pages) once, then recorded.
        """
        problem = self.check(entry)
        if problem is not None:
            return problem
        try:
            stat = self.store.stat(entry)
        except (EtcdguardError, OSError) as exc:
            return f"it cannot be checked: {exc}"
        if stat is None:
            return f"it is no longer in the vault ({self.location})"
        known = self.records.get(self.location, entry.sha256) if self.records is not None else None
        problem = metadata_problem(entry, stat) or (
            fingerprint_problem(entry, stat, known, self.records.path) if known and self.records else None)
        if problem is not None:
            self._failed(VaultBackendError(problem, "download", "checksum"), "download")
            return f"{problem}; refused ({self.location})"
        return None if known is not None else self._verify_in_full(entry, stat)

    def _verify_in_full(self, entry: VaultEntry, stat: ObjectStat) -> Optional[str]:
        """Download (and decrypt) the copy, check it as a restore would, and record it when it passes."""
        try:
            with self.materialize(entry) as path:
                verify_restorable(path, entry.sha256, entry.size)
            after = self.store.stat(entry)
        except agekeys.AgeError as exc:
            return (f"it cannot be decrypted with [vault] age_identity {self.identity}: {' '.join(str(exc).split())}; "
                    "a damaged or rewritten object, or an identity it was not encrypted to")
        except (EtcdguardError, OSError) as exc:
            return f"reading it back in full: {' '.join(str(exc).split())}"
        if after != stat:
            return (f"it changed while it was being verified (fingerprint {stat.tag} then "
                    f"{after.tag if after else 'gone'})")
        if self.records is not None:
            self.records.put(self.location, entry.sha256, Fingerprint.of(stat, VERIFIED))
        log.info("vault: verified the copy of %s in full (%s) and recorded it", entry.sha256[:16], self.location)
        return None

    @contextlib.contextmanager
    def materialize(self, entry: VaultEntry) -> Iterator[Path]:
        """A local, plaintext, sha256-verified file of ``entry`` for as long as the block runs.

        A plain directory vault yields its own file (after re-hashing it);
        otherwise a 0600 temp file in the work directory, removed on exit.
        """
        if isinstance(self.store, DirStore) and not entry.encrypted and not entry.compression:
            path = self.store.data_path(entry.sha256)
            with self._counting("download"):
                verify_file(path, entry.sha256, entry.size)
            yield path
            return
        ensure_space(self.work_dir, entry.size, "vault work directory")
        temp = fsutil.temp_path(self.work_dir, "materialized")
        try:
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as out:
                self._write_verified(entry, out)
                out.flush()
                os.fsync(out.fileno())
            yield temp
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def export(self, entry: VaultEntry, dest: Path, *, bundle: bool = False, raw: bool = False) -> int:
        """Write a snapshot (decrypted, verified) or its node bundle to ``dest``; returns bytes written.

        ``raw``: the bytes as stored (still encrypted). Nothing is left at
        ``dest`` unless the copy is complete and checked.
        """
        kind = BUNDLE if bundle else SNAPSHOT
        if bundle and not entry.bundle:
            raise UsageError(f"snapshot {entry.sha256[:12]} has no node bundle in the vault (the agent had none, "
                             "or its [bundle] has no encrypt_to)")
        with fsutil.atomic_writer(dest) as out:
            if raw:
                with self._counting("download"), self.store.open_read(entry, kind) as src:
                    agekeys.copy_stream(src, out)
            elif bundle:
                with self._counting("download"), self._plaintext(entry, BUNDLE) as src:
                    agekeys.copy_stream(src, out)   # type: ignore[arg-type]
            else:
                self._write_verified(entry, out)
            written = int(out.tell())
        return written

    # -- pruning -------------------------------------------------------------
    def delete(self, entry: VaultEntry) -> None:
        with self._counting("delete"):
            self.store.delete(entry)
        self.catalog.drop(entry.sha256)
        if self.records is not None:
            self.records.drop(self.location, entry.sha256)

    def apply_retention(self, keep: int) -> builtins.list[retention.Verdict]:
        """Keep pinned entries and the ``keep`` newest others (the newest always); delete the rest, and the
        continuous backup segments no kept snapshot needs."""
        with self._lock:
            entries = {e.sha256: e for e in self.list()}
            verdicts = retention.decide([retention.Aged(e.sha256, e.created_unix, e.pinned, e.revision, e.cluster_id)
                                         for e in entries.values()], keep, None, time.time())
            for v in verdicts:
                if not v.keep:
                    log.info("vault retention: deleting %s (%s)", v.name[:16], v.reason)
                    self.delete(entries[v.name])
            self.segments.prune([entries[v.name] for v in verdicts if v.keep])
        self.sweep()
        return verdicts

