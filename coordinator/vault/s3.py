"""The S3 backend: the vault in a bucket of any S3 API (AWS S3, MinIO, Ceph RGW), through boto3.

- The catalog is a listing: each object's key carries its metadata
  (names.py), so there is no index object to go out of step.
- Uploads stream: boto3's managed transfer reads one part at a time
  (``part_size``, two in flight, one read ahead), from the file or from
  age's output, so memory does not grow with the snapshot (about five parts
  at the peak, measured). An object exists only once its
  upload completed (S3's PutObject and CompleteMultipartUpload are atomic);
  a failed upload is aborted, and uploads left incomplete by a crash are
  aborted when the vault is opened. A partial upload is never listed, and
  never left behind: an upload whose own abort could not reach the endpoint
  (cut by an outage) is aborted as soon as it answers again, and any
  incomplete upload under the prefix older than ``abort_incomplete_after``
  is swept after every pull (``sweep``; the decision is ``to_abort``).
- Each object records the sha256 of the snapshot it holds (and of its bytes
  when they are not re-encrypted on the way) in its metadata; reads re-check
  them.
- Errors are VaultBackendError with an operator's message and a metrics
  reason: credentials, denied, no_bucket, unreachable, checksum, other.
  Secrets never appear in them: boto3 keeps the credentials, and its error
  messages do not carry them.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import itertools
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any, Optional

from etcdguard.common.base.errors import ConfigError, SnapshotCorrupt
from etcdguard.coordinator.config import S3Settings
from etcdguard.coordinator.vault import names
from etcdguard.coordinator.vault.backends import BUNDLE, Data, VaultBackendError
from etcdguard.coordinator.vault.entry import ZSTD, VaultEntry, derive_kind
from etcdguard.coordinator.vault.verified import ObjectStat

log = logging.getLogger(__name__)

CONCURRENCY = 2
META_SNAPSHOT = "snapshot-sha256"
META_CONTENT = "content-sha256"
META_SIZE = "snapshot-size"
META_KIND = "snapshot-kind"
META_COMPRESSION = "snapshot-compression"
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}


def classify(exc: BaseException) -> str:
    """Pure: the failure metric's reason for a botocore exception."""
    from botocore import exceptions as be

    if isinstance(exc, (be.NoCredentialsError, be.PartialCredentialsError, be.CredentialRetrievalError)):
        return "credentials"
    if isinstance(exc, be.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _CREDENTIAL_CODES:
            return "credentials"
        if code in _DENIED_CODES:
            return "denied"
        if code in ("NoSuchBucket", "404") and exc.operation_name in ("HeadBucket", "ListObjectsV2"):
            return "no_bucket"
        return "other"
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionClosedError, be.ReadTimeoutError,
                        be.ConnectTimeoutError, be.ProxyConnectionError, be.SSLError, be.HTTPClientError)):
        return "unreachable"
    return "other"


_URL_RE = re.compile(r"(?P<origin>https?://[^/\s\"']+)[^\s\"']*")


def error_detail(exc: BaseException, bucket: str, key: Optional[str]) -> str:
    """Pure: the first line of a botocore error, without the object's key.

    The message that carries it already names the key (``uploading KEY
    failed: ...``), and botocore repeats it in its own text, inside a request
    URL (``Could not connect to the endpoint URL: "http://host/bucket/KEY?uploadId=..."``)
    or after ``Failed to upload ... to bucket/KEY``: a key of 250 characters
    printed twice hides the reason. URLs keep their scheme, host and port.
    """
    text = str(exc).splitlines()[0][:1000] if str(exc) else type(exc).__name__
    text = _URL_RE.sub(lambda m: m.group("origin"), text)
    if key:
        quoted = urllib.parse.quote(key)
        for form in (f"{bucket}/{key}", key, quoted, quoted.replace("~", "%7E")):
            text = text.replace(form, "the object")
    return text[:300]


_HINTS = {
    "credentials": "the S3 credentials were refused or are missing: check [vault.s3] credentials_file (or "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the unit's environment)",
    "denied": "the credentials lack permission: they need s3:ListBucket, s3:GetObject, s3:PutObject, "
              "s3:DeleteObject and s3:AbortMultipartUpload on the bucket and prefix",
    "no_bucket": "the bucket does not exist: create it, or fix [vault.s3] bucket",
    "unreachable": "the S3 endpoint did not answer: check [vault.s3] endpoint, the network and TLS",
}


@dataclass(frozen=True)
class Upload:
    """One incomplete multipart upload, as ListMultipartUploads shows it."""

    key: str
    upload_id: str
    initiated: Optional[float]    # unix seconds by the endpoint's clock; None when it did not say


def to_abort(uploads: Iterable[Upload], now: float, older_than: float, *, failed: Collection[str] = (),
             uploading: Collection[str] = (), everything: bool = False) -> list[Upload]:
    """Pure: the incomplete uploads to abort, never one of a key this coordinator uploads right now.

    ``failed``: keys whose upload failed here (its own abort may not have
    reached the endpoint): their uploads are dead. Others only once older
    than ``older_than`` (another writer's may be live), or all of them with
    ``everything`` (at start: nothing of this coordinator runs yet).
    """
    out = []
    for u in uploads:
        if u.key in uploading:
            continue
        stale = u.initiated is not None and now - u.initiated >= older_than
        if everything or u.key in failed or stale:
            out.append(u)
    return out


def _upload(raw: dict[str, Any]) -> Upload:
    initiated = raw.get("Initiated")
    when = initiated.timestamp() if isinstance(initiated, datetime) else None
    return Upload(str(raw["Key"]), str(raw["UploadId"]), when)


class S3Store:
    """The vault in ``s3://bucket/prefix``."""

    name = "s3"

    def __init__(self, settings: S3Settings, client: Any) -> None:
        self.settings = settings
        self.client = client
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.location = f"s3://{settings.bucket}/{settings.prefix}"
        self._lock = threading.Lock()
        self._uploading: set[str] = set()   # keys being uploaded now: never aborted
        self._failed: set[str] = set()      # keys whose upload failed here: their incomplete uploads are dead

    # -- errors --------------------------------------------------------------
    def _error(self, exc: BaseException, op: str, what: str, key: Optional[str] = None) -> VaultBackendError:
        """The operator's message: what failed (naming ``key`` once), botocore's reason, the hint."""
        reason = classify(exc)
        hint = _HINTS.get(reason, "")
        detail = error_detail(exc, self.bucket, key)
        return VaultBackendError(f"{self.location}: {what} failed: {detail}" + (f"; {hint}" if hint else ""),
                                 op, reason)

    @contextlib.contextmanager
    def _calling(self, op: str, what: str, key: Optional[str] = None) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, op, what, key) from None

    # -- opening -------------------------------------------------------------
    def prepare(self) -> builtins.list[PurePath]:
        """Check the bucket answers; abort uploads a crashed pull left incomplete under the prefix."""
        with self._calling("list", f"opening bucket {self.bucket}"):
            self.client.head_bucket(Bucket=self.bucket)
        return self.sweep(everything=True)

    @property
    def leftovers(self) -> bool:
        """Whether an upload failed here and its incomplete upload may still be in the bucket."""
        with self._lock:
            return bool(self._failed)

    def sweep(self, now: Optional[float] = None, everything: bool = False) -> builtins.list[PurePath]:
        """Abort the incomplete uploads under the prefix that ``to_abort`` picks; the keys aborted."""
        with self._calling("delete", f"listing the incomplete uploads under {self.location}"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=self.prefix)
            found = [_upload(u) for page in pages for u in page.get("Uploads", []) or []]
        with self._lock:
            failed, uploading = set(self._failed), set(self._uploading)
        chosen = to_abort(found, time.time() if now is None else now, self.settings.abort_incomplete_after,
                          failed=failed, uploading=uploading, everything=everything)
        for u in chosen:
            with self._calling("delete", f"aborting the incomplete upload of {u.key}", u.key):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=u.key, UploadId=u.upload_id)
            log.info("vault: aborted an incomplete upload of %s", u.key)
        with self._lock:   # every upload of a failed key is gone now (or is the one running)
            self._failed -= failed - uploading
        return [PurePosixPath(u.key) for u in chosen]

    # -- listing -------------------------------------------------------------
    def _objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every object under ``prefix``."""
        with self._calling("list", f"listing {self.location}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []) or []:
                    yield str(obj["Key"]), int(obj.get("Size", 0) or 0)

    def _keys(self, prefix: str) -> Iterator[str]:
        return (key for key, _ in self._objects(prefix))

    def _entries(self, objects: Iterator[tuple[str, int]]) -> builtins.list[VaultEntry]:
        snapshots: dict[str, tuple[int, names.SnapshotName]] = {}
        bundles: set[str] = set()
        pins: dict[str, str] = {}
        for key, size in objects:
            parsed = names.parse_key(self.prefix, key)
            if parsed is None:
                continue
            if parsed.kind == "snapshot" and parsed.snapshot is not None:
                snapshots[parsed.sha256] = (size, parsed.snapshot)
            elif parsed.kind == "bundle":
                bundles.add(parsed.sha256)
            elif parsed.kind == "pin" and parsed.reason is not None:
                pins[parsed.sha256] = parsed.reason
        return [_entry(n, pinned=pins.get(sha), bundle=sha in bundles, stored_size=size)
                for sha, (size, n) in snapshots.items()]

    def list(self) -> builtins.list[VaultEntry]:
        """The snapshots, bundles and pins (each its own prefix: segments, many small objects, are listed
        on their own, by S3Segments)."""
        objects = itertools.chain(*(self._objects(f"{self.prefix}{sub}") for sub in (names.SNAPSHOTS, names.BUNDLES,
                                                                                   names.PINS)))
        return self._entries(objects)

    def get(self, sha256: str) -> Optional[VaultEntry]:
        objects = [*self._objects(f"{self.prefix}{names.SNAPSHOTS}{sha256}{names.SEP}")]
        if not objects:
            return None
        objects += self._objects(names.bundle_key(self.prefix, sha256))
        objects += self._objects(f"{self.prefix}{names.PINS}{sha256}{names.SEP}")
        found = self._entries(iter(objects))
        return found[0] if found else None

    def _snapshot_key(self, entry: VaultEntry) -> str:
        """The key a new copy of ``entry`` is stored under."""
        return names.snapshot_key(self.prefix, _name_of(entry))

    def _stored_keys(self, sha256: str) -> builtins.list[str]:
        """The keys the snapshot ``sha256`` is stored under, looked up rather than rebuilt: a key written
        before kinds were recorded lacks the kind its entry now reads with."""
        return [key for key in self._keys(f"{self.prefix}{names.SNAPSHOTS}{sha256}{names.SEP}")
                if (parsed := names.parse_key(self.prefix, key)) is not None and parsed.kind == "snapshot"]

    def _stored_key(self, entry: VaultEntry) -> str:
        found = self._stored_keys(entry.sha256)
        return found[0] if found else self._snapshot_key(entry)   # gone: reading it fails as missing

    def stat(self, entry: VaultEntry) -> Optional[ObjectStat]:
        """A HEAD of the snapshot's object: its ETag, size and metadata; None when it is not there."""
        from botocore.exceptions import ClientError

        key = self._stored_key(entry)
        with self._calling("download", f"checking {key}", key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return ObjectStat(tag=str(head.get("ETag", "")).strip('"'), size=int(head.get("ContentLength", -1)),
                          snapshot_sha256=meta.get(META_SNAPSHOT), content_sha256=meta.get(META_CONTENT),
                          recorded_size=meta.get(META_SIZE))

    # -- reading -------------------------------------------------------------
    @contextlib.contextmanager
    def open_read(self, entry: VaultEntry, kind: str) -> Iterator[IO[bytes]]:
        key = names.bundle_key(self.prefix, entry.sha256) if kind == BUNDLE else self._stored_key(entry)
        with self._calling("download", f"reading {key}", key):
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        meta = {k.lower(): v for k, v in (obj.get("Metadata") or {}).items()}
        recorded = meta.get(META_SNAPSHOT)
        if kind != BUNDLE and recorded != entry.sha256:
            obj["Body"].close()
            raise VaultBackendError(f"{self.location}: {key} records snapshot sha256 {str(recorded)[:16]!r} in its "
                                    "metadata, its name says another: refused (the object was replaced?)",
                                    "download", "checksum")
        body = _Checked(obj["Body"], meta.get(META_CONTENT), key, self)
        try:
            yield body   # type: ignore[misc]
        finally:
            obj["Body"].close()

    # -- writing -------------------------------------------------------------
    def save(self, entry: VaultEntry, kind: str, data: Data) -> None:
        from boto3.s3.transfer import TransferConfig

        if kind == BUNDLE:
            key = names.bundle_key(self.prefix, entry.sha256)
            assert isinstance(data, Path), "bundles are saved from a file"
            meta = {META_SNAPSHOT: entry.sha256, META_CONTENT: _sha256_file(data)}
        else:
            try:
                key = self._snapshot_key(entry)
            except ValueError as exc:
                raise VaultBackendError(f"{self.location}: cannot name snapshot {entry.sha256[:16]}: {exc}",
                                        "upload", "other") from None
            meta = _snapshot_meta(entry, data)
        extra: dict[str, Any] = {"Metadata": meta}
        s = self.settings
        if s.sse:
            extra["ServerSideEncryption"] = s.sse
            if s.sse_kms_key_id:
                extra["SSEKMSKeyId"] = s.sse_kms_key_id
        if s.storage_class:
            extra["StorageClass"] = s.storage_class
        config = TransferConfig(multipart_threshold=s.part_size, multipart_chunksize=s.part_size,
                                max_concurrency=CONCURRENCY, max_io_queue=CONCURRENCY, use_threads=True)
        # s3transfer reads up to this many parts ahead into memory (10 by default: 160 MiB at 16 MiB parts).
        config.max_in_memory_upload_chunks = CONCURRENCY + 1
        if self.leftovers:   # S3 answers again: first what the outage left behind
            self.sweep()
        with self._lock:
            self._uploading.add(key)
        try:
            with self._calling("upload", f"uploading {key}", key), contextlib.ExitStack() as stack:
                src: Any = stack.enter_context(open(data, "rb")) if isinstance(data, Path) else data
                self.client.upload_fileobj(src, self.bucket, key, ExtraArgs=extra, Config=config)
        except BaseException:
            with self._lock:
                self._failed.add(key)   # boto3 aborts it, unless the endpoint is what failed
            raise
        finally:
            with self._lock:
                self._uploading.discard(key)

    def delete(self, entry: VaultEntry) -> None:
        """The snapshot first (the entry leaves the catalog), then its bundle and pins."""
        keys = [*self._stored_keys(entry.sha256), names.bundle_key(self.prefix, entry.sha256),
                *self._keys(f"{self.prefix}{names.PINS}{entry.sha256}{names.SEP}")]
        with self._calling("delete", f"deleting {entry.sha256[:16]}"):
            for key in keys:
                self.client.delete_object(Bucket=self.bucket, Key=key)

    def set_pin(self, sha256: str, reason: Optional[str]) -> None:
        old = list(self._keys(f"{self.prefix}{names.PINS}{sha256}{names.SEP}"))
        with self._calling("upload" if reason else "delete", f"pinning {sha256[:16]}"):
            new = names.pin_key(self.prefix, sha256, reason) if reason is not None else None
            if new is not None:
                self.client.put_object(Bucket=self.bucket, Key=new, Body=b"")
            for key in old:
                if key != new:
                    self.client.delete_object(Bucket=self.bucket, Key=key)

    def ensure_space(self, size: int) -> None:
        return None


class S3Segments:
    """Continuous backup's segments as objects under ``<prefix>segments/`` (vault/segstore.py): small,
    uploaded whole with one PutObject (atomic: a failed upload is never listed)."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self.root = f"{store.prefix}segments/"
        self.location = f"s3://{store.bucket}/{self.root}"

    def list_objects(self) -> builtins.list[tuple[str, int]]:
        s = self.store
        out = []
        with s._calling("list", f"listing {self.location}"):
            for page in s.client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket, Prefix=self.root):
                for obj in page.get("Contents", []) or []:
                    out.append((str(obj["Key"])[len(self.root):], int(obj.get("Size", 0))))
        return out

    def put(self, name: str, data: bytes) -> None:
        s = self.store
        key = self.root + name
        extra: dict[str, Any] = {"Metadata": {META_CONTENT: hashlib.sha256(data).hexdigest()}}
        if s.settings.sse:
            extra["ServerSideEncryption"] = s.settings.sse
            if s.settings.sse_kms_key_id:
                extra["SSEKMSKeyId"] = s.settings.sse_kms_key_id
        if s.settings.storage_class:
            extra["StorageClass"] = s.settings.storage_class
        with s._calling("upload", f"uploading {key}", key):
            s.client.put_object(Bucket=s.bucket, Key=key, Body=data, **extra)

    def get(self, name: str) -> bytes:
        s = self.store
        key = self.root + name
        with s._calling("download", f"reading {key}", key):
            obj = s.client.get_object(Bucket=s.bucket, Key=key)
            try:
                data: bytes = obj["Body"].read()
            finally:
                obj["Body"].close()
        recorded = {k.lower(): v for k, v in (obj.get("Metadata") or {}).items()}.get(META_CONTENT)
        digest = hashlib.sha256(data).hexdigest()
        if recorded is not None and recorded != digest:
            raise SnapshotCorrupt(f"{self.location}: {name}: its bytes hash to {digest[:16]}, its metadata "
                                  f"records {recorded[:16]}: altered or damaged; refused")
        return data

    def delete(self, name: str) -> None:
        s = self.store
        key = self.root + name
        with s._calling("delete", f"deleting {key}", key):
            s.client.delete_object(Bucket=s.bucket, Key=key)


class _Checked:
    """A body that, at its end, checks the sha256 its object's metadata records for its bytes."""

    def __init__(self, body: Any, expected: Optional[str], key: str, store: S3Store) -> None:
        self.body = body
        self.expected = expected
        self.key = key
        self.store = store
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            data: bytes = self.body.read(size if size >= 0 else None)
        except BotoCoreError as exc:
            raise self.store._error(exc, "download", f"reading {self.key}", self.key) from None
        except OSError as exc:
            raise VaultBackendError(f"{self.store.location}: reading {self.key} failed: {exc}", "download",
                                    "unreachable") from None
        if data:
            self.digest.update(data)
        elif self.expected is not None and self.digest.hexdigest() != self.expected:
            raise SnapshotCorrupt(f"{self.store.location}: {self.key}: its bytes hash to "
                                  f"{self.digest.hexdigest()[:16]}, its metadata records {self.expected[:16]}: "
                                  "the object was altered or damaged; refused")
        return data


def _snapshot_meta(entry: VaultEntry, data: Data) -> dict[str, str]:
    """A snapshot object's metadata: the snapshot it holds, and the sha256 of its bytes where known (the
    snapshot's own, or its compressed form's; encrypted bytes are checked by decrypting them)."""
    meta = {META_SNAPSHOT: entry.sha256, META_SIZE: str(entry.size), META_KIND: entry.kind}
    if entry.compression:
        meta[META_COMPRESSION] = entry.compression
    if not entry.encrypted:
        if not entry.compression:
            meta[META_CONTENT] = entry.sha256
        elif isinstance(data, Path):
            meta[META_CONTENT] = _sha256_file(data)
    return meta


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name_of(e: VaultEntry) -> names.SnapshotName:
    return names.SnapshotName(
        sha256=e.sha256, created_unix=e.created_unix, revision=e.revision, size=e.size, cluster_id=e.cluster_id,
        member_id=e.member_id, etcd_version=e.etcd_version, source_member=e.source_member,
        original_name=e.original_name, pulled_unix=e.pulled_unix, revision_exact=e.revision_exact,
        encrypted=e.encrypted, kind=e.kind, hashkv=e.hashkv, hashkv_compact_revision=e.hashkv_compact_revision,
        key_count=e.key_count, compressed=e.compression == ZSTD)


def _entry(n: names.SnapshotName, pinned: Optional[str], bundle: bool, stored_size: int = 0) -> VaultEntry:
    from etcdguard.common.base.durations import iso_utc

    return VaultEntry(
        sha256=n.sha256, size=n.size, source_member=n.source_member, original_name=n.original_name,
        revision=n.revision, cluster_id=n.cluster_id, member_id=n.member_id, etcd_version=n.etcd_version,
        created_at=iso_utc(n.created_unix), created_unix=n.created_unix, pulled_at=iso_utc(n.pulled_unix),
        pulled_unix=n.pulled_unix, pinned=pinned, bundle=bundle, encrypted=n.encrypted,
        revision_exact=n.revision_exact, kind=derive_kind(n.kind, pinned), hashkv=n.hashkv,
        hashkv_compact_revision=n.hashkv_compact_revision, key_count=n.key_count,
        compression=ZSTD if n.compressed else "", stored_size=stored_size)


def open_s3(settings: S3Settings, source: str) -> S3Store:
    """A client for ``settings``; ConfigError (exit 2) when no credentials can be found or read.

    Credentials come from ``credentials_file`` (an AWS shared-credentials file,
    0600) when it is set, else from boto3's chain: the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE), ~/.aws, a web
    identity or an instance role. Whether the endpoint accepts them shows at
    the first request (a failure metric with reason ``credentials``).

    Every request is bounded by ``connect_timeout``, ``read_timeout`` and
    ``max_attempts``: an endpoint that accepts connections and never answers
    costs at most about their product, and nothing that answers an operator
    waits on it (the daemon lists the vault in the background, catalog.py).
    """
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    where = f"{source}: vault.s3"
    bs = botocore.session.Session()
    if settings.credentials_file is not None:
        _check_credentials_file(settings.credentials_file, f"{where}.credentials_file")
        bs.set_config_variable("credentials_file", str(settings.credentials_file))
        bs.set_config_variable("profile", settings.profile or "default")
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise ConfigError(f"{where}.ca_bundle {settings.ca_bundle}: no such file")
    try:
        session = boto3.session.Session(botocore_session=bs, region_name=settings.region)
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        raise ConfigError(f"{where}: cannot read the S3 credentials: {exc}") from None
    if credentials is None:
        raise ConfigError(
            f"{where}: no S3 credentials found: set credentials_file (an AWS shared-credentials file with "
            "aws_access_key_id and aws_secret_access_key) or give the boto3 chain some (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the unit's environment, or an instance role)")
    config = Config(
        region_name=settings.region or session.region_name or "us-east-1",
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
    )
    client = session.client("s3", endpoint_url=settings.endpoint, config=config,
                            verify=str(settings.ca_bundle) if settings.ca_bundle else None)
    return S3Store(settings, client)


def _check_credentials_file(path: Path, what: str) -> None:
    import configparser
    import os
    import stat

    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: not readable (permission denied)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc}") from None
    if st.st_mode & 0o007:
        raise ConfigError(f"{what} {path}: readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                          f"run chmod 600 {path}")
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text, str(path))
    except configparser.Error as exc:
        raise ConfigError(f"{what} {path}: not an AWS credentials file: {str(exc).splitlines()[0]}") from None
    if not any(parser.has_option(s, "aws_access_key_id") and parser.has_option(s, "aws_secret_access_key")
               for s in parser.sections()):
        raise ConfigError(f"{what} {path}: no section with aws_access_key_id and aws_secret_access_key "
                          "(expected an AWS shared-credentials file: [default] then both keys)")
