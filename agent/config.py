"""Agent configuration: TOML into frozen dataclasses.

Everything discovery can find is optional here; explicit keys always win over
what discovery finds. Errors name the file, the key and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.common.base.errors import ConfigError
from etcdguard.common.base.tomlconf import Table, load_toml

DEFAULT_CONFIG_PATH = Path("/etc/etcdguard/agent.toml")
RUNTIMES = ("static-pod", "systemd", "process")


@dataclass(frozen=True)
class EtcdSettings:
    runtime: Optional[str] = None  # None: detect
    manifest: Optional[Path] = None
    unit: Optional[str] = None
    unit_file: Optional[Path] = None  # where the unit lives, when not in the usual dirs
    start_command: Optional[tuple[str, ...]] = None
    pid_file: Optional[Path] = None
    endpoints: Optional[tuple[str, ...]] = None
    cacert: Optional[Path] = None
    cert: Optional[Path] = None
    key: Optional[Path] = None
    name: Optional[str] = None
    data_dir: Optional[Path] = None
    peer_url: Optional[str] = None
    restore_tool: Optional[Path] = None
    wal_dir: Optional[Path] = None
    dial_timeout: float = 5.0


@dataclass(frozen=True)
class ApiserverSettings:
    manifest: Optional[Path] = None
    unit: Optional[str] = None
    start_command: Optional[tuple[str, ...]] = None
    pid_file: Optional[Path] = None
    health_url: Optional[str] = None  # probed to prove it is stopped / started


@dataclass(frozen=True)
class RestartSettings:
    """A service restarted after a cluster restore (kube-controller-manager, kube-scheduler, ...),
    so that nothing serves from caches filled before the restore."""

    manifest: Optional[Path] = None
    unit: Optional[str] = None
    start_command: Optional[tuple[str, ...]] = None
    pid_file: Optional[Path] = None

    @property
    def label(self) -> str:
        if self.manifest is not None:
            return self.manifest.stem
        if self.unit is not None:
            return self.unit
        return Path((self.start_command or ("command",))[0]).name


@dataclass(frozen=True)
class BackupSettings:
    dir: Path = Path("/var/lib/etcdguard/snapshots")
    interval: float = 3600.0
    keep: int = 24
    max_age: Optional[float] = None
    timeout: float = 1800.0


DEFAULT_BUNDLE_PATHS = (
    Path("/etc/kubernetes/pki"),                   # etcd CA, peer and server keys, cluster CA, service-account keys
    Path("/etc/kubernetes/manifests"),             # the static-pod manifests
    Path("/etc/kubernetes/kubeadm-config.yaml"),   # the kubeadm config, where kept there
)


@dataclass(frozen=True)
class BundleSettings:
    """[bundle]: what a rebuilt node needs that etcd does not hold, archived beside each snapshot."""

    enabled: bool = True
    paths: tuple[Path, ...] = DEFAULT_BUNDLE_PATHS   # missing ones are skipped
    encrypt_to: tuple[str, ...] = ()   # age recipients; without any the bundle never leaves the node


@dataclass(frozen=True)
class RestoreSettings:
    bump_revision: int = 1_000_000_000
    stop_timeout: float = 60.0
    start_timeout: float = 120.0


@dataclass(frozen=True)
class ServerSettings:
    listen: str = "tcp://0.0.0.0:7479"
    secret_key: Optional[Path] = Path("/etc/etcdguard/keys/agent.key_secret")
    authorized_keys: Optional[Path] = Path("/etc/etcdguard/keys/authorized")
    insecure: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class MetricsSettings:
    listen: Optional[str] = "127.0.0.1:9479"


@dataclass(frozen=True)
class StateSettings:
    dir: Path = Path("/var/lib/etcdguard")


@dataclass(frozen=True)
class AgentConfig:
    source: str = "<defaults>"
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    apiserver: Optional[ApiserverSettings] = None
    restart: tuple[RestartSettings, ...] = ()
    backup: BackupSettings = field(default_factory=BackupSettings)
    bundle: BundleSettings = field(default_factory=BundleSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    state: StateSettings = field(default_factory=StateSettings)


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate an agent config file."""
    return parse_agent_config(load_toml(path), str(path))


def parse_agent_config(data: dict[str, Any], source: str) -> AgentConfig:
    """Validate already-parsed TOML; pure, so unit tests feed it dicts."""
    top = Table(source, "", data)
    etcd = _etcd(Table(source, "etcd", top.data.get("etcd")))
    apiserver = None
    if top.has("apiserver"):
        apiserver = _apiserver(Table(source, "apiserver", top.data.get("apiserver")))
    restart = _restarts(source, top.data.get("restart"))
    backup = _backup(Table(source, "backup", top.data.get("backup")))
    bundle = _bundle(Table(source, "bundle", top.data.get("bundle")))
    restore = _restore(Table(source, "restore", top.data.get("restore")))
    server = _server(Table(source, "server", top.data.get("server")))
    metrics_t = Table(source, "metrics", top.data.get("metrics"))
    metrics = MetricsSettings(listen=metrics_t.listen("listen", MetricsSettings.listen))
    if metrics_t.has("enabled") and not metrics_t.flag("enabled", True):
        metrics = MetricsSettings(listen=None)
    metrics_t.finish()
    state_t = Table(source, "state", top.data.get("state"))
    state = StateSettings(dir=state_t.path("dir", StateSettings.dir) or StateSettings.dir)
    state_t.finish()
    for section in ("etcd", "apiserver", "restart", "backup", "bundle", "restore", "server", "metrics", "state"):
        top._get(section)
    top.finish()
    return AgentConfig(
        source=source, etcd=etcd, apiserver=apiserver, restart=restart, backup=backup, bundle=bundle,
        restore=restore,
        server=server, metrics=metrics, state=state,
    )


def _etcd(t: Table) -> EtcdSettings:
    endpoints = t.text_list("endpoints")
    for url in endpoints or ():
        if not url.startswith(("http://", "https://")):
            raise t.error("endpoints", "URLs starting with http:// or https://")
    peer_url = t.text("peer_url")
    if peer_url is not None and not peer_url.startswith(("http://", "https://")):
        raise t.error("peer_url", "a URL starting with http:// or https://")
    s = EtcdSettings(
        runtime=t.choice("runtime", RUNTIMES),
        manifest=t.path("manifest"),
        unit=t.text("unit"),
        unit_file=t.path("unit_file"),
        start_command=t.text_list("start_command"),
        pid_file=t.path("pid_file"),
        endpoints=endpoints,
        cacert=t.path("cacert"),
        cert=t.path("cert"),
        key=t.path("key"),
        name=t.text("name"),
        data_dir=t.path("data_dir"),
        peer_url=peer_url,
        restore_tool=t.path("restore_tool"),
        wal_dir=t.path("wal_dir"),
        dial_timeout=t.duration("dial_timeout", 5.0) or 5.0,
    )
    if (s.cert is None) != (s.key is None):
        raise ConfigError(f"{t.source}: etcd.cert and etcd.key must be given together")
    if s.runtime == "process" and not s.start_command:
        raise ConfigError(
            f"{t.source}: etcd.runtime = 'process' needs etcd.start_command "
            "(the command that starts this member)"
        )
    if s.runtime == "process" and s.pid_file is None:
        raise ConfigError(f"{t.source}: etcd.runtime = 'process' needs etcd.pid_file")
    if s.runtime == "systemd" and s.unit is None:
        s = EtcdSettings(**{**s.__dict__, "unit": "etcd.service"})
    t.finish()
    return s


def _apiserver(t: Table) -> ApiserverSettings:
    s = ApiserverSettings(
        manifest=t.path("manifest"),
        unit=t.text("unit"),
        start_command=t.text_list("start_command"),
        pid_file=t.path("pid_file"),
        health_url=t.text("health_url"),
    )
    given = [k for k in ("manifest", "unit", "start_command") if getattr(s, k) is not None]
    if len(given) != 1:
        raise ConfigError(
            f"{t.source}: [apiserver] needs exactly one of manifest, unit or start_command"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if s.start_command is not None and s.pid_file is None:
        raise ConfigError(f"{t.source}: apiserver.start_command needs apiserver.pid_file")
    t.finish()
    return s


def _restarts(source: str, value: Any) -> tuple[RestartSettings, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{source}: restart: expected [[restart]] tables (an array of tables)")
    out = []
    for index, entry in enumerate(value):
        t = Table(source, f"restart[{index}]", entry)
        r = RestartSettings(manifest=t.path("manifest"), unit=t.text("unit"),
                            start_command=t.text_list("start_command"), pid_file=t.path("pid_file"))
        given = [k for k in ("manifest", "unit", "start_command") if getattr(r, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{source}: [[restart]] #{index + 1} needs exactly one of manifest, unit or "
                              "start_command" + (f" (got {', '.join(given)})" if given else ""))
        if r.start_command is not None and r.pid_file is None:
            raise ConfigError(f"{source}: restart[{index}].start_command needs restart[{index}].pid_file")
        t.finish()
        out.append(r)
    return tuple(out)


def _backup(t: Table) -> BackupSettings:
    d = BackupSettings()
    s = BackupSettings(
        dir=t.path("dir", d.dir) or d.dir,
        interval=t.duration("interval", d.interval) or d.interval,
        keep=t.integer("keep", d.keep, minimum=1) or d.keep,
        max_age=t.duration("max_age"),
        timeout=t.duration("timeout", d.timeout) or d.timeout,
    )
    t.finish()
    return s


def _bundle(t: Table) -> BundleSettings:
    from etcdguard.common.base.agekeys import check_recipients

    d = BundleSettings()
    paths = t.text_list("paths")
    for p in paths or ():
        if not p.startswith("/"):
            raise t.error("paths", "absolute paths (files or directories)")
    recipients = t.text_list("encrypt_to") or ()
    problem = check_recipients(recipients)
    if problem is not None:
        raise t.error("encrypt_to", f"age recipients ('age1' and 58 more characters, from age-keygen); {problem}")
    s = BundleSettings(enabled=t.flag("enabled", d.enabled),
                       paths=tuple(Path(p) for p in paths) if paths is not None else d.paths,
                       encrypt_to=recipients)
    t.finish()
    return s


def _restore(t: Table) -> RestoreSettings:
    d = RestoreSettings()
    bump = t.integer("bump_revision", d.bump_revision, minimum=0)
    s = RestoreSettings(
        bump_revision=d.bump_revision if bump is None else bump,
        stop_timeout=t.duration("stop_timeout", d.stop_timeout) or d.stop_timeout,
        start_timeout=t.duration("start_timeout", d.start_timeout) or d.start_timeout,
    )
    t.finish()
    return s


def _server(t: Table) -> ServerSettings:
    d = ServerSettings()
    listen = t.text("listen", d.listen) or d.listen
    if not listen.startswith(("tcp://", "ipc://")):
        raise t.error("listen", "a ZeroMQ endpoint such as 'tcp://0.0.0.0:7479'")
    s = ServerSettings(
        listen=listen,
        secret_key=t.path("secret_key", d.secret_key),
        authorized_keys=t.path("authorized_keys", d.authorized_keys),
        insecure=t.flag("insecure", False),
        enabled=t.flag("enabled", True),
    )
    t.finish()
    return s
