"""Coordinator configuration: TOML into frozen dataclasses.

Parsing is pure (``parse_coordinator_config`` takes a dict), so every rule is
unit-tested without files. Errors name the file, the key and what was
expected; unknown keys are errors. Key *files* are read only by the daemon
(``load_member_keys``), so ``etcdguardctl`` can still reach the daemon when the
operator may not read the coordinator's secret key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.errors import ConfigError
from etcdguard.common.base.tomlconf import Table, load_toml
from etcdguard.common.wire.protocol import NAME_PATTERN

DEFAULT_CONFIG_PATH = Path("/etc/etcdguard/coordinator.toml")
AGENT_PORT = 7479
MIN_CONTROL_TIMEOUT = 5.0

_NAME_RE = re.compile(NAME_PATTERN)
# tcp://HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 address.
_ENDPOINT_RE = re.compile(
    r"tcp://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})"
)


@dataclass(frozen=True)
class CoordinatorSettings:
    state_dir: Path = Path("/var/lib/etcdguard-coordinator")
    control_socket: Path = Path("/run/etcdguard/coordinator.sock")
    secret_key: Optional[Path] = Path("/etc/etcdguard/keys/coordinator.key_secret")
    insecure: bool = False          # plain TCP to the agents (no CURVE); logged as a warning at start
    request_timeout: float = 5.0    # deadline of one short request (status, list) to an agent
    control_timeout: float = 30.0   # etcdguardctl: the daemon's first reply, and each gap between two lines


BACKENDS = ("dir", "s3")
COMPRESSIONS = ("zstd", "none")
SSE_MODES = ("AES256", "aws:kms")
MIN_PART_SIZE = 5 << 20             # S3's smallest multipart part
MAX_PART_SIZE = 1 << 30
MAX_S3_TIMEOUT = 600.0              # a longer wait on one request is a hang, not a slow answer
MAX_S3_ATTEMPTS = 10
MIN_ABORT_AFTER = 60.0              # an incomplete upload younger than this may still be someone's live one


@dataclass(frozen=True)
class S3Settings:
    """[vault.s3]: where the S3-compatible backend keeps the vault (AWS S3, MinIO, Ceph RGW)."""

    bucket: str = ""
    endpoint: Optional[str] = None          # None: AWS
    region: Optional[str] = None            # None: from the boto3 chain, else us-east-1
    prefix: str = ""
    path_style: bool = False
    credentials_file: Optional[Path] = None   # None: the boto3 chain (environment, ~/.aws, instance role)
    profile: Optional[str] = None           # the section of credentials_file (default "default")
    sse: Optional[str] = None               # server-side encryption: AES256 or aws:kms
    sse_kms_key_id: Optional[str] = None
    ca_bundle: Optional[Path] = None        # a private CA for the endpoint's TLS certificate
    part_size: int = 16 << 20               # multipart part size; memory use is about 5 parts
    storage_class: Optional[str] = None
    connect_timeout: float = 5.0            # one TCP (and TLS) connect to the endpoint
    read_timeout: float = 30.0              # one wait for bytes of an answer (or to send a part's bytes)
    max_attempts: int = 3                   # tries of one request, the first included (botocore's standard mode)
    abort_incomplete_after: float = 3600.0  # incomplete multipart uploads under the prefix older than this are aborted


@dataclass(frozen=True)
class VaultSettings:
    dir: Path = Path("/var/lib/etcdguard-coordinator/vault")
    interval: float = 3600.0
    keep: int = 48
    timeout: float = 1800.0         # deadline for an agent to take a snapshot, and for one transfer
    backend: str = "dir"
    encrypt_to: tuple[str, ...] = ()   # age recipients: with any, nothing is stored unencrypted
    age_identity: Optional[Path] = None   # decrypts on fetch and export (0600)
    s3: Optional[S3Settings] = None    # with backend = "s3"
    compression: str = "zstd"          # how new objects are stored: "zstd" or "none" (old objects read either way)
    compression_level: int = 1         # zstd level, 1 (fastest) to 19


@dataclass(frozen=True)
class RestoreSettings:
    """The cluster-wide restore (etcdguardctl restore)."""

    bump_revision: int = 1_000_000_000   # raised past the live revision when that is needed
    safety_snapshot: bool = True         # snapshot the live cluster into the vault first, when it answers
    start_timeout: float = 120.0         # etcd on every member to reach quorum and health after the swap
    fence_settle: float = 0.5            # with every kube-apiserver stopped the revision must stay still this long
    step_timeout: float = 300.0          # one step on one member (stop, swap, start, ...)
    prepare_timeout: float = 3600.0      # staging and the restore tool, while etcd still serves
    agent_down: float = 60.0             # an agent that stops answering mid-restore gets this long to come back
    prestage: bool = True                # copy each newest vault snapshot to every agent ahead of any restore
    prestage_rate: int = 100 * 1024**2   # bytes per second per copy (0: no cap), so pre-staging spares the network
    warm_standby: bool = False           # keep the newest snapshot restored ahead on every member (a db copy each)


MIN_FLUSH = 0.5                     # seconds: a segment more often than this is an object per write
MIN_SEGMENT_SIZE = 64 << 10
MAX_SEGMENT_SIZE = 64 << 20         # a segment is read whole into memory (replay, history)


@dataclass(frozen=True)
class ContinuousSettings:
    """[continuous]: every change between snapshots captured from etcd's watch into vault segments."""

    enabled: bool = True
    flush: float = 5.0                  # a segment at least this often while changes come in
    segment_size: int = 4 << 20         # ... or as soon as this many bytes of changes wait


@dataclass(frozen=True)
class ScratchSettings:
    """The scratch etcd on the coordinator host: restore drills and point-in-time builds run one."""

    etcd: Optional[Path] = None       # the etcd server binary (None: `etcd` on PATH)
    tool: Optional[Path] = None       # etcdutl (or etcd 3.4's etcdctl) (None: found on PATH)
    dir: Optional[Path] = None        # where scratch data lives (None: <state_dir>/scratch)


@dataclass(frozen=True)
class DrillSettings:
    """Restore drills: vault snapshots restored into a scratch etcd on this host and proven (coordinator/drill/)."""

    interval: float = 86400.0        # a scheduled drill this often; 0: none (etcdguardctl drill still works)
    enabled: Optional[bool] = None   # None: wherever a scratch etcd is available here; True: say loudly when not
    sample_keys: int = 64            # keys read back one by one from the restored store


@dataclass(frozen=True)
class MetricsSettings:
    listen: Optional[str] = "127.0.0.1:9480"   # None: no metrics endpoint


@dataclass(frozen=True)
class MemberSettings:
    name: str
    agent: str                      # tcp://HOST:PORT of the member's agent
    public_key: Optional[Path]      # the agent's public key file (None only with insecure = true)


@dataclass(frozen=True)
class CoordinatorConfig:
    source: str = "<defaults>"
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    members: tuple[MemberSettings, ...] = ()
    scratch: ScratchSettings = field(default_factory=ScratchSettings)
    continuous: ContinuousSettings = field(default_factory=ContinuousSettings)
    drill: DrillSettings = field(default_factory=DrillSettings)

    def member(self, name: str) -> Optional[MemberSettings]:
        for m in self.members:
            if m.name == name:
                return m
        return None


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    """Read and validate a coordinator config file."""
    return parse_coordinator_config(load_toml(path), str(path))


def parse_coordinator_config(data: dict[str, Any], source: str) -> CoordinatorConfig:
    """Validate already-parsed TOML; pure, so unit tests feed it dicts."""
    top = Table(source, "", data)
    coordinator = _coordinator(Table(source, "coordinator", top.data.get("coordinator")))
    vault = _vault(Table(source, "vault", top.data.get("vault")))
    restore = _restore(Table(source, "restore", top.data.get("restore")))
    scratch = _scratch(Table(source, "scratch", top.data.get("scratch")))
    continuous = _continuous(Table(source, "continuous", top.data.get("continuous")))
    drill = _drill(Table(source, "drill", top.data.get("drill")))
    metrics_t = Table(source, "metrics", top.data.get("metrics"))
    metrics = MetricsSettings(listen=metrics_t.listen("listen", MetricsSettings.listen))
    if metrics_t.has("enabled") and not metrics_t.flag("enabled", True):
        metrics = MetricsSettings(listen=None)
    metrics_t.finish()
    members = _members(source, top.data.get("members"), coordinator.insecure)
    for section in ("coordinator", "vault", "restore", "metrics", "members", "scratch", "continuous", "drill"):
        top._get(section)
    top.finish()
    return CoordinatorConfig(source=source, coordinator=coordinator, vault=vault, restore=restore,
                             metrics=metrics, members=members, scratch=scratch, continuous=continuous, drill=drill)


def _coordinator(t: Table) -> CoordinatorSettings:
    d = CoordinatorSettings()
    insecure = t.flag("insecure", False)
    secret_key = t.path("secret_key", None if insecure else d.secret_key)
    s = CoordinatorSettings(
        state_dir=t.path("state_dir", d.state_dir) or d.state_dir,
        control_socket=t.path("control_socket", d.control_socket) or d.control_socket,
        secret_key=secret_key,
        insecure=insecure,
        request_timeout=t.duration("request_timeout", d.request_timeout) or d.request_timeout,
        control_timeout=t.duration("control_timeout", d.control_timeout) or d.control_timeout,
    )
    if s.control_timeout < MIN_CONTROL_TIMEOUT:
        raise t.error("control_timeout", f"a duration of at least {MIN_CONTROL_TIMEOUT:g}s (the daemon sends a "
                      "heartbeat every 2s while it works)")
    # sun_path holds 108 bytes including the terminating NUL.
    if len(str(s.control_socket).encode()) > 107:
        raise t.error("control_socket", "a path of at most 107 bytes (a Unix socket address)")
    t.finish()
    return s


def _vault(t: Table) -> VaultSettings:
    from etcdguard.common.base.agekeys import check_recipients

    d = VaultSettings()
    backend = t.choice("backend", BACKENDS, d.backend) or d.backend
    recipients = t.text_list("encrypt_to") or ()
    problem = check_recipients(recipients)
    if problem is not None:
        raise t.error("encrypt_to", f"age recipients ('age1' and 58 more characters, from age-keygen); {problem}")
    s3_table = t._get("s3")
    s3 = _s3(Table(t.source, "vault.s3", s3_table)) if s3_table is not None else None
    if backend == "s3" and s3 is None:
        raise ConfigError(f"{t.source}: vault.backend = 's3' needs a [vault.s3] table with at least bucket")
    s = VaultSettings(
        dir=t.path("dir", d.dir) or d.dir,
        interval=t.duration("interval", d.interval) or d.interval,
        keep=t.integer("keep", d.keep, minimum=1) or d.keep,
        timeout=t.duration("timeout", d.timeout) or d.timeout,
        backend=backend,
        encrypt_to=recipients,
        age_identity=t.path("age_identity"),
        s3=s3,
        compression=t.choice("compression", COMPRESSIONS, d.compression) or d.compression,
        compression_level=_level(t, d.compression_level),
    )
    t.finish()
    return s


def _level(t: Table, default: int) -> int:
    from etcdguard.common.snapshot.compression import MAX_LEVEL, MIN_LEVEL

    level = t.integer("compression_level", default, minimum=MIN_LEVEL)
    if level is not None and level > MAX_LEVEL:
        raise t.error("compression_level", f"a zstd level from {MIN_LEVEL} (fastest) to {MAX_LEVEL}")
    return default if level is None else level


def _scratch(t: Table) -> ScratchSettings:
    s = ScratchSettings(etcd=t.path("etcd"), tool=t.path("tool"), dir=t.path("dir"))
    t.finish()
    return s


def _continuous(t: Table) -> ContinuousSettings:
    d = ContinuousSettings()
    flush = t.duration("flush", d.flush)
    if flush is None or flush < MIN_FLUSH:
        raise t.error("flush", f"a duration of at least {MIN_FLUSH:g}s, e.g. '5s' (how often captured changes are "
                      "written to the vault)")
    size = t.size("segment_size", d.segment_size)
    if size is None or not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise t.error("segment_size", "a size from 64KiB to 64MiB, e.g. '4MiB'")
    s = ContinuousSettings(enabled=t.flag("enabled", d.enabled), flush=flush, segment_size=size)
    t.finish()
    return s


def _drill(t: Table) -> DrillSettings:
    d = DrillSettings()
    raw = t._get("interval")
    off = not isinstance(raw, bool) and raw in ("0", 0, "0s")   # "0": no scheduled drills
    enabled = t.flag("enabled") if t.has("enabled") else None
    s = DrillSettings(interval=0.0 if off else (t.duration("interval", d.interval) or d.interval), enabled=enabled,
                      sample_keys=t.integer("sample_keys", d.sample_keys, minimum=1) or d.sample_keys)
    t.finish()
    return s


def _restore(t: Table) -> RestoreSettings:
    d = RestoreSettings()
    bump = t.integer("bump_revision", d.bump_revision, minimum=0)
    s = RestoreSettings(
        bump_revision=d.bump_revision if bump is None else bump,
        safety_snapshot=t.flag("safety_snapshot", d.safety_snapshot),
        start_timeout=t.duration("start_timeout", d.start_timeout) or d.start_timeout,
        fence_settle=t.duration("fence_settle", d.fence_settle) or d.fence_settle,
        step_timeout=t.duration("step_timeout", d.step_timeout) or d.step_timeout,
        prepare_timeout=t.duration("prepare_timeout", d.prepare_timeout) or d.prepare_timeout,
        agent_down=t.duration("agent_down", d.agent_down) or d.agent_down,
        prestage=t.flag("prestage", d.prestage),
        prestage_rate=t.size("prestage_rate", d.prestage_rate) or 0,
        warm_standby=t.flag("warm_standby", d.warm_standby),
    )
    t.finish()
    return s


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_RE = re.compile(r"[A-Za-z0-9!_.*'()/-]{0,512}")
_REGION_RE = re.compile(r"[a-z0-9-]{1,64}")


def _s3(t: Table) -> S3Settings:
    d = S3Settings()
    bucket = t.text("bucket")
    if bucket is None or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise t.error("bucket", "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')")
    endpoint = t.text("endpoint")
    if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(?::[0-9]{1,5})?/?", endpoint):
        raise t.error("endpoint", "an http:// or https:// URL of the S3 API, e.g. 'https://minio.example:9000' "
                      "(leave it out for AWS)")
    region = t.text("region")
    if region is not None and not _REGION_RE.fullmatch(region):
        raise t.error("region", "a region name such as 'us-east-1'")
    prefix = "" if t._get("prefix") == "" else (t.text("prefix", "") or "")   # "": the bucket's root
    if not _PREFIX_RE.fullmatch(prefix) or prefix.startswith("/") or "//" in prefix:
        raise t.error("prefix", "a key prefix of letters, digits and !_.*'()/- (no leading '/', no '//'), "
                      "e.g. 'prod-cluster/'")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    sse = t.choice("sse", SSE_MODES)
    kms = t.text("sse_kms_key_id")
    if kms is not None and sse != "aws:kms":
        raise t.error("sse_kms_key_id", "nothing unless sse = 'aws:kms'")
    part = t.integer("part_size", d.part_size, minimum=MIN_PART_SIZE)
    if part is not None and part > MAX_PART_SIZE:
        raise t.error("part_size", f"bytes from {MIN_PART_SIZE} (5 MiB) to {MAX_PART_SIZE} (1 GiB)")
    storage_class = t.text("storage_class")
    if storage_class is not None and not re.fullmatch(r"[A-Z_]{2,32}", storage_class):
        raise t.error("storage_class", "an S3 storage class such as 'STANDARD_IA'")
    timeouts = {key: _s3_timeout(t, key, getattr(d, key)) for key in ("connect_timeout", "read_timeout")}
    attempts = t.integer("max_attempts", d.max_attempts, minimum=1) or d.max_attempts
    if attempts > MAX_S3_ATTEMPTS:
        raise t.error("max_attempts", f"an integer from 1 to {MAX_S3_ATTEMPTS} (tries of one request, the first "
                      "included)")
    abort_after = t.duration("abort_incomplete_after", d.abort_incomplete_after) or d.abort_incomplete_after
    if abort_after < MIN_ABORT_AFTER:
        raise t.error("abort_incomplete_after", f"a duration of at least {MIN_ABORT_AFTER:g}s (longer than any "
                      "upload of a snapshot takes: a younger incomplete upload may be a live one)")
    s = S3Settings(
        bucket=bucket, endpoint=endpoint.rstrip("/") if endpoint else None, region=region, prefix=prefix,
        path_style=t.flag("path_style", d.path_style), credentials_file=t.path("credentials_file"),
        profile=t.text("profile"), sse=sse, sse_kms_key_id=kms, ca_bundle=t.path("ca_bundle"),
        part_size=part or d.part_size, storage_class=storage_class, max_attempts=attempts,
        abort_incomplete_after=abort_after, **timeouts,
    )
    if s.profile is not None and s.credentials_file is None:
        raise t.error("profile", "nothing unless credentials_file is set (without it, the boto3 chain reads "
                      "AWS_PROFILE)")
    t.finish()
    return s


def _s3_timeout(t: Table, key: str, default: float) -> float:
    """A bound on one S3 request: a positive duration of at most MAX_S3_TIMEOUT."""
    seconds = t.duration(key, default) or default
    if seconds > MAX_S3_TIMEOUT:
        raise t.error(key, f"a duration of at most {MAX_S3_TIMEOUT:g}s (one request's bound; longer is a hang)")
    return seconds


def require_members(config: CoordinatorConfig) -> None:
    """The daemon needs members; the file may lack them (the packaged one does) until it is set up."""
    if not config.members:
        raise ConfigError(
            f"{config.source}: no [[members]]: expected one [[members]] table (name, agent, public_key) "
            "per etcd member"
        )


def _members(source: str, value: Any, insecure: bool) -> tuple[MemberSettings, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: members: expected [[members]] tables (an array of tables), "
                          f"got {'an empty array' if isinstance(value, list) else type(value).__name__}")
    members: list[MemberSettings] = []
    names: dict[str, int] = {}
    endpoints: dict[str, int] = {}
    for index, entry in enumerate(value):
        t = Table(source, f"members[{index}]", entry)
        name = t.text("name")
        if name is None:
            raise t.error("name", "the member's etcd name (its --name), e.g. 'cp1'")
        if not _NAME_RE.fullmatch(name):
            raise t.error("name", "a member name of letters, digits, '.', '_' or '-' (at most 128)")
        agent = t.text("agent")
        if agent is None:
            raise t.error("agent", f"the agent's ZeroMQ endpoint, e.g. 'tcp://10.0.0.1:{AGENT_PORT}'")
        match = _ENDPOINT_RE.fullmatch(agent)
        if match is None or not 1 <= int(match.group("port")) <= 65535:
            raise t.error("agent", f"tcp://HOST:PORT, e.g. 'tcp://10.0.0.1:{AGENT_PORT}'")
        public_key = t.path("public_key")
        if public_key is None and not insecure:
            raise t.error("public_key", "the path of the agent's public key file (NAME.key from "
                          "`etcdguardctl keygen`); only [coordinator] insecure = true goes without")
        t.finish()
        if name in names:
            raise ConfigError(f"{source}: members[{index}].name: {name!r} is already the name of "
                              f"members[{names[name]}]; member names must be unique")
        if agent in endpoints:
            raise ConfigError(f"{source}: members[{index}].agent: {agent!r} is already the agent of "
                              f"members[{endpoints[agent]}]; each member has its own agent")
        names[name] = index
        endpoints[agent] = index
        members.append(MemberSettings(name=name, agent=agent, public_key=public_key))
    return tuple(members)


# ---------------------------------------------------------------------------
# Key files (side effects: the daemon reads them at start and on reload).


@dataclass(frozen=True)
class Keys:
    """The coordinator's keypair and each member's agent public key (all None when insecure)."""

    public: Optional[bytes]
    secret: Optional[bytes]
    members: dict[str, Optional[bytes]]


def load_keys(config: CoordinatorConfig) -> Keys:
    """Read every key file the config names; ConfigError (exit 2) names the config key and the file."""
    from etcdguard.common.wire import keys

    if config.coordinator.insecure:
        return Keys(None, None, {m.name: None for m in config.members})
    secret_path = config.coordinator.secret_key
    assert secret_path is not None
    public, secret = keys.load_keypair(secret_path, f"{config.source}: coordinator.secret_key")
    members: dict[str, Optional[bytes]] = {}
    for index, m in enumerate(config.members):
        assert m.public_key is not None
        members[m.name] = keys.load_public(m.public_key, f"{config.source}: members[{index}].public_key")
    return Keys(public, secret, members)
