"""Discovery: how etcd runs on this node, worked out into one `LocalMember`.

etcd is found as a kubeadm static pod (its manifest), a systemd service (the
unit, its drop-ins and environment files) or a configured start command, in
that order unless ``etcd.runtime`` says which. Each yields etcd's own settings
(flag name -> value and where it came from), read the way etcd reads them:
flags win over ``ETCD_*`` variables, and ``--config-file`` replaces both. One
assembly step then applies explicit config (which always wins), maps container
paths to host paths, picks the client certificate and fills the few safe
defaults. Parsing is pure over text; only `discover` and its readers touch
files.

``root`` only redirects reading, so tests can use a fake tree: every path in
the result is the real absolute path on the node, without the root prefix.

``LocalMember.sources`` records per field where the value came from:
``config``, ``manifest:<path>``, ``unit:<path>``, ``env:<path>`` (an
EnvironmentFile), ``config-file:<path>`` (etcd's ``--config-file``),
``start_command``, ``kubeadm:<path>`` (the healthcheck-client pair next to the
CA) or ``default``; a last-resort choice says ``(fallback: ...)``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent.config import AgentConfig, EtcdSettings
from etcdguard.agent.discovery.goflags import FlagError, apiserver_flags, etcd_flags
from etcdguard.agent.discovery.manifests import (
    ManifestError,
    as_pod,
    container_argv,
    container_env,
    find_container,
    host_path,
    load_yaml,
)
from etcdguard.agent.discovery.member import ClientTLS, LocalMember, prefer_local
from etcdguard.agent.runtime.static_pod import park_dir
from etcdguard.common.base.addresses import parse_url
from etcdguard.common.base.errors import DiscoveryError

DEFAULT_MANIFEST = Path("/etc/kubernetes/manifests/etcd.yaml")
APISERVER_MANIFEST_NAME = "kube-apiserver.yaml"
DEFAULT_UNIT = "etcd.service"
UNIT_DIRS = tuple(
    Path(d)
    for d in ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
)
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
HEALTHCHECK_CERT = "healthcheck-client.crt"
HEALTHCHECK_KEY = "healthcheck-client.key"

_SHELLS = frozenset({"sh", "bash", "dash"})
_SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&"})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_ASSIGNMENT = re.compile(rf"({_NAME})=(.*)\Z", re.S)

Settings = dict[str, tuple[str, str]]  # etcd flag name -> (value, source)


# -- pure parsing ---------------------------------------------------------------


def env_flag(variable: str) -> Optional[str]:
    """The etcd flag an ``ETCD_*`` variable sets (etcd maps ``--data-dir`` to ``ETCD_DATA_DIR``)."""
    if variable.startswith("ETCD_") and len(variable) > 5:
        return variable[5:].lower().replace("_", "-")
    return None


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines as systemd's EnvironmentFile= reads them (and /etc/default files are written).

    ``#``/``;`` comment lines, single and double quotes, backslash continuation,
    an optional ``export``; lines that are not assignments are ignored (systemd
    warns and goes on).
    """
    out: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        pending = ""
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        m = _ASSIGNMENT.match(line)
        if m:
            out[m.group(1)] = _unquote_env(m.group(2).strip())
    return out


def _unquote_env(raw: str) -> str:
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(raw):
        ch = raw[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch == "\\" and raw[i + 1:i + 2] in ('"', "\\", "`", "$"):
                i += 1
                out.append(raw[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(raw):
            i += 1
            out.append(raw[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file in order, continuation lines joined."""
    out: list[tuple[str, str, str]] = []
    section = ""
    logical: Optional[str] = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue  # comments, also inside a continued line
        if logical is None and not line:
            continue
        if line.endswith("\\"):
            logical = (logical or "") + line[:-1] + " "
            continue
        line, logical = (logical or "") + line, None
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, value = line.split("=", 1)
            out.append((section, key.strip(), value.strip()))
    if logical:
        line = logical.strip()
        if "=" in line:
            key, value = line.split("=", 1)
            out.append((section, key.strip(), value.strip()))
    return out


def expand_specifiers(value: str, unit: str, hostname: Callable[[], str]) -> str:
    """Replace systemd's %-specifiers that a system unit's paths and settings use."""
    base = unit.rsplit(".", 1)[0] if "." in unit else unit
    prefix, _, instance = base.partition("@")
    fixed = {
        "n": unit, "N": base, "p": prefix, "i": instance, "I": instance, "%": "%",
        "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc",
        "T": "/tmp", "V": "/var/tmp",
    }

    def one(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch in ("H", "l"):
            return hostname()
        return fixed.get(ch, m.group(0))

    return re.sub(r"%(.)", one, value)


def _substitute(word: str, env: Mapping[str, str], bare: bool) -> tuple[str, Optional[str]]:
    """Expand ``${VAR}`` (and ``$VAR`` when ``bare``, as a shell does) in one word; also the first name used."""
    used: list[str] = []
    pattern = rf"\$\$|\$\{{({_NAME})\}}" + (rf"|\$({_NAME})" if bare else "")

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        used.append(name)
        return env.get(name, "")

    return re.sub(pattern, one, word), (used[0] if used else None)


def _exec_words(command: str, env: Mapping[str, str]) -> list[tuple[str, Optional[str]]]:
    """An ExecStart= line as systemd runs it: (word, variable it came from)."""
    command = command.strip()
    argv0_override = False
    while command[:1] in ("-", "@", "+", "!", ":", "|"):
        argv0_override = argv0_override or command[0] == "@"
        command = command[1:]
    words: list[tuple[str, Optional[str]]] = []
    for word in shlex.split(command):
        whole = re.fullmatch(rf"\$({_NAME})", word)
        if whole:  # "$VAR" as a word of its own is split at whitespace
            words.extend((part, whole.group(1)) for part in env.get(whole.group(1), "").split())
        else:
            words.append(_substitute(word, env, bare=False))
    if argv0_override and len(words) > 1:
        del words[1]  # "@/usr/bin/etcd etcd ...": the second word is only argv[0]
    return words


def split_exec(command: str, env: Mapping[str, str]) -> list[str]:
    """The argv systemd builds from an ExecStart= value (prefixes stripped, variables expanded)."""
    return [word for word, _ in _exec_words(command, env)]


def etcd_command(
    words: Sequence[tuple[str, Optional[str]]], env: Mapping[str, str]
) -> tuple[list[tuple[str, Optional[str]]], dict[str, str]]:
    """The etcd invocation inside a wrapper, and variables assigned in front of it.

    Handles ``sh -c "... etcd ..."`` (the RHEL unit), ``env VAR=x etcd ...`` and
    ``VAR=x etcd ...``; a command without an etcd word is returned whole.
    """
    plain = [w for w, _ in words]
    if plain and posixpath.basename(plain[0]) in _SHELLS and "-c" in plain[1:-1]:
        script = plain[plain.index("-c", 1) + 1]
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = [(_substitute(w, env, bare=True)[0], None) for w in lexer]
        plain = [w for w, _ in words]
    start = next((i for i, w in enumerate(plain) if posixpath.basename(w) == "etcd"), None)
    if start is None:
        return list(words), {}
    assigned = {}
    for w in plain[:start]:
        m = _ASSIGNMENT.match(w)
        if m:
            assigned[m.group(1)] = m.group(2)
    end = next((i for i in range(start, len(plain)) if plain[i] in _SHELL_OPERATORS), len(plain))
    return list(words[start:end]), assigned


def config_file_settings(doc: Mapping[str, Any], source: str) -> Settings:
    """Settings from etcd's YAML ``--config-file`` (its keys are the flag names)."""
    out: Settings = {}
    for key, value in doc.items():
        if key in ("client-transport-security", "peer-transport-security") and isinstance(value, dict):
            prefix = "peer-" if key.startswith("peer") else ""
            for sub, v in value.items():
                if isinstance(v, (str, int, bool)):
                    out[prefix + sub] = (_text(v), source)
        elif isinstance(value, (str, int, bool)):
            out[key] = (_text(value), source)
    return out


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """What discovery needs from a unit's [Service] section once its drop-ins are applied."""

    exec_start: tuple[tuple[str, str], ...] = ()  # (command line, file)
    environment: tuple[tuple[str, str, str], ...] = ()  # (name, value, file), in order
    environment_files: tuple[tuple[str, bool, str], ...] = ()  # (path, optional, file)
    working_directory: Optional[str] = None


def read_service(files: Sequence[tuple[str, str]], expand: Callable[[str], str]) -> ServiceSpec:
    """Merge the unit and its drop-ins, given as (path, text) in the order systemd applies them.

    An empty assignment (``ExecStart=``) resets the list, as drop-ins use it.
    Raises ValueError naming the file for quoting systemd would reject.
    """
    exec_start: list[tuple[str, str]] = []
    env: list[tuple[str, str, str]] = []
    env_files: list[tuple[str, bool, str]] = []
    workdir: Optional[str] = None
    for path, text in files:
        for section, key, value in parse_unit(text):
            if section != "Service":
                continue
            if key == "ExecStart":
                exec_start = [*exec_start, (expand(value), path)] if value else []
            elif key == "Environment":
                env = [*env, *_assignments(path, value, expand)] if value else []
            elif key == "EnvironmentFile":
                if not value:
                    env_files = []
                else:
                    env_files.append((expand(value.lstrip("-")), value.startswith("-"), path))
            elif key == "WorkingDirectory":
                workdir = expand(value.lstrip("-")) or None
    return ServiceSpec(tuple(exec_start), tuple(env), tuple(env_files), workdir)


def _assignments(path: str, value: str, expand: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """(name, value, file) of each NAME=VALUE word of an ``Environment=`` line, as systemd splits it."""
    try:
        words = shlex.split(expand(value))
    except ValueError as exc:
        raise ValueError(f"{path}: Environment={value}: {exc}") from None
    return [(m.group(1), m.group(2), path) for m in map(_ASSIGNMENT.match, words) if m]


# -- reading the node -------------------------------------------------------------


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else root / path


def _read(root: Path, path: Path, what: str, hint: str) -> str:
    try:
        return _under(root, path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DiscoveryError(f"{what} {path} not found; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DiscoveryError(f"{what} {path} cannot be read ({reason}); {hint}") from None


def _load_yaml(root: Path, path: Path, what: str, hint: str) -> Any:
    try:
        return load_yaml(_read(root, path, what, hint))
    except ManifestError as exc:
        raise DiscoveryError(f"{what} {path} is not valid YAML ({exc}); {hint}") from None


def _load_pod(root: Path, path: Path, hint: str) -> dict[str, Any]:
    try:
        return as_pod(_load_yaml(root, path, "static-pod manifest", hint))
    except ManifestError as exc:
        raise DiscoveryError(f"static-pod manifest {path} is {exc}; {hint}") from None


@dataclasses.dataclass(frozen=True)
class _Found:
    """etcd's settings as one runtime describes them, before config and defaults apply."""

    runtime: Optional[str]
    origin: str  # source of the runtime itself
    where: str  # for messages: "static-pod manifest /etc/kubernetes/manifests/etcd.yaml"
    settings: Settings
    to_host: Callable[[str], str]  # raises LookupError(why) when a path cannot be mapped
    manifest: Optional[Path] = None
    unit: Optional[str] = None
    image: Optional[str] = None
    workdir: Optional[str] = None  # where a relative data dir lives (systemd WorkingDirectory=)


def _absolute_only(why: str) -> Callable[[str], str]:
    def to_host(path: str) -> str:
        if not path.startswith("/"):
            raise LookupError(why)
        return posixpath.normpath(path)

    return to_host


def _static_pod(manifest: Path, root: Path, origin: str) -> _Found:
    hint = "set etcd.manifest (or etcd.runtime)"
    pod = _load_pod(root, manifest, hint)
    container = find_container(pod, "etcd")
    if container is None:
        raise DiscoveryError(
            f"static-pod manifest {manifest} has no etcd container (none is named 'etcd' "
            f"or runs an etcd command); {hint}"
        )
    try:
        argv = container_argv(container)
        flags = etcd_flags(argv)
    except ValueError as exc:  # ManifestError, FlagError
        raise DiscoveryError(f"static-pod manifest {manifest}: {exc}; {hint}") from None
    source = f"manifest:{manifest}"
    settings: Settings = {}
    for var, value in container_env(container).items():
        flag = env_flag(var)
        if flag:
            settings[flag] = (value, source)
    settings.update((flag, (value, source)) for flag, value in flags.values.items())
    image = container.get("image")
    return _Found(
        runtime="static-pod", origin=origin, where=f"static-pod manifest {manifest}",
        settings=settings, to_host=lambda p: host_path(pod, container, p), manifest=manifest,
        image=image if isinstance(image, str) else None,
    )


def _unit_candidates(unit: str) -> list[str]:
    names = [unit]
    base, _, instance = unit.partition("@")
    if instance:  # etcd@m1.service falls back to the template etcd@.service
        names.append(base + "@" + instance[instance.rfind("."):])
    return names


def _find_unit(cfg: EtcdSettings, root: Path) -> Optional[Path]:
    if cfg.unit_file is not None:
        return cfg.unit_file if _under(root, cfg.unit_file).is_file() else None
    for name in _unit_candidates(_unit_name(cfg)):
        for d in UNIT_DIRS:
            if _under(root, d / name).is_file():
                return d / name
    return None


def _unit_name(cfg: EtcdSettings) -> str:
    unit = cfg.unit or (cfg.unit_file.name if cfg.unit_file else DEFAULT_UNIT)
    return unit if "." in unit else unit + ".service"


def _dropins(root: Path, unit_file: Path, unit: str) -> list[Path]:
    """``<unit>.d/*.conf`` from every unit directory, sorted by name; /etc masks /run masks /usr/lib."""
    dirs = list(UNIT_DIRS) + ([unit_file.parent] if unit_file.parent not in UNIT_DIRS else [])
    chosen: dict[str, Path] = {}
    for d in dirs:
        for name in dict.fromkeys(_unit_candidates(unit) + [unit_file.name]):
            for f in sorted(_under(root, d / f"{name}.d").glob("*.conf")):
                chosen.setdefault(f.name, d / f"{name}.d" / f.name)
    return [chosen[k] for k in sorted(chosen)]


def _env_file_paths(root: Path, path: str) -> list[Path]:
    """EnvironmentFile= may be a glob; the result is node paths (without the root)."""
    if not any(c in path for c in "*?["):
        return [Path(path)]
    return sorted(Path("/") / p.relative_to(root) for p in root.glob(path.lstrip("/")))


def _systemd(cfg: EtcdSettings, root: Path, unit_file: Path, origin: str, hostname: Callable[[], str]) -> _Found:
    unit = _unit_name(cfg)
    hint = "set etcd.unit / etcd.unit_file (or etcd.runtime)"
    files = [unit_file, *_dropins(root, unit_file, unit)]
    texts = [(str(f), _read(root, f, "systemd unit file", hint)) for f in files]
    try:
        spec = read_service(texts, lambda v: expand_specifiers(v, unit, hostname))
    except ValueError as exc:
        raise DiscoveryError(f"systemd unit {unit}: {exc}") from None

    env: dict[str, tuple[str, str]] = {name: (value, f"unit:{f}") for name, value, f in spec.environment}
    for path, optional, f in spec.environment_files:  # files override Environment=, in order
        for p in _env_file_paths(root, path):
            if optional and not _under(root, p).is_file():
                continue
            text = _read(root, p, f"EnvironmentFile of {unit} (in {f})",
                         "create it or make it optional with a leading '-'")
            env.update((k, (v, f"env:{p}")) for k, v in parse_env_file(text).items())

    if not spec.exec_start:
        raise DiscoveryError(f"systemd unit {unit} ({unit_file}) has no ExecStart=; {hint}")
    values = {k: v for k, (v, _) in env.items()}
    candidates = []
    for command, f in spec.exec_start:
        try:
            words, assigned = etcd_command(_exec_words(command, values), values)
        except ValueError as exc:
            raise DiscoveryError(f"{f}: ExecStart={command}: {exc}") from None
        candidates.append((words, assigned, f))
    # Only one ExecStart may run a notify/simple service; prefer the one that runs etcd.
    words, assigned, exec_file = next(
        (c for c in reversed(candidates) if c[0] and posixpath.basename(c[0][0][0]) == "etcd"),
        candidates[-1],
    )
    env.update((k, (v, f"unit:{exec_file}")) for k, v in assigned.items())

    settings: Settings = {}
    for var, (value, source) in env.items():
        flag = env_flag(var)
        if flag:
            settings[flag] = (value, source)
    try:
        flags = etcd_flags([w for w, _ in words])
    except FlagError as exc:
        raise DiscoveryError(f"{exec_file}: ExecStart= runs etcd with a command line etcd refuses: {exc}; "
                             "fix the unit") from None
    for flag, value in flags.values.items():
        from_var = words[flags.positions[flag]][1]
        settings[flag] = (value, env[from_var][1] if from_var in env else f"unit:{exec_file}")

    workdir = spec.working_directory if (spec.working_directory or "").startswith("/") else None

    def to_host(path: str) -> str:
        if path.startswith("/"):
            return posixpath.normpath(path)
        if workdir is None:
            raise LookupError("is relative and the unit sets no absolute WorkingDirectory=")
        return posixpath.normpath(posixpath.join(workdir, path))

    return _Found(
        runtime="systemd", origin=origin, where=f"systemd unit {unit} ({unit_file})",
        settings=settings, to_host=to_host, unit=unit, workdir=workdir,
    )


def _process(cfg: EtcdSettings, origin: str, config_source: str) -> _Found:
    words, assigned = etcd_command([(w, None) for w in cfg.start_command or ()], {})
    settings: Settings = {}
    for var, value in assigned.items():
        flag = env_flag(var)
        if flag:
            settings[flag] = (value, "start_command")
    try:
        flags = etcd_flags([w for w, _ in words])
    except FlagError as exc:
        raise DiscoveryError(f"etcd.start_command runs etcd with a command line etcd refuses: {exc}; "
                             f"fix etcd.start_command in {config_source}") from None
    settings.update((k, (v, "start_command")) for k, v in flags.values.items())
    return _Found(
        runtime="process", origin=origin, where="etcd.start_command", settings=settings,
        to_host=_absolute_only("is relative and the working directory of etcd.start_command is not known"),
    )


def _with_config_file(found: _Found, root: Path) -> _Found:
    """etcd ignores its other flags and ETCD_* variables when given --config-file."""
    if "config-file" not in found.settings:
        return found
    raw, source = found.settings["config-file"]
    hint = "set etcd.name, etcd.data_dir and etcd.endpoints explicitly"
    try:
        path = Path(found.to_host(raw))
    except LookupError as exc:
        raise DiscoveryError(f"{found.where}: --config-file={raw} {exc} (from {source}); {hint}") from None
    doc = _load_yaml(root, path, "etcd config file", hint)
    if not isinstance(doc, dict):
        raise DiscoveryError(f"etcd config file {path} is not a YAML mapping; {hint}")
    return dataclasses.replace(found, settings=config_file_settings(doc, f"config-file:{path}"))


def parked_manifest(config: AgentConfig, manifest: Path) -> Path:
    """Where the static-pod runtime keeps ``manifest`` while etcd is stopped for a restore."""
    return park_dir(config.state.dir) / manifest.name


def _manifest_present(config: AgentConfig, root: Path, manifest: Path) -> bool:
    """In place, or parked by an interrupted restore (so resume and rollback still find the member).

    A user who may not look into the agent's state dir (not root) sees no parked manifest; `check`
    reports that dir as a problem of its own.
    """
    if _under(root, manifest).is_file():
        return True
    try:
        return _under(root, parked_manifest(config, manifest)).is_file()
    except PermissionError:
        return False


def _detect(config: AgentConfig, root: Path) -> tuple[Optional[str], str, Optional[Path]]:
    """(runtime, its source, the manifest or unit file); DiscoveryError when nothing fits."""
    cfg = config.etcd
    manifest = cfg.manifest or DEFAULT_MANIFEST
    where = f"in {config.source}"
    if cfg.runtime == "static-pod" or (cfg.runtime is None and cfg.manifest is not None):
        if not _manifest_present(config, root, manifest):
            raise DiscoveryError(
                f"static-pod manifest {manifest} not found; set etcd.manifest {where} to the file "
                "kubelet runs etcd from (or set etcd.runtime)"
            )
        return "static-pod", "config" if cfg.runtime else f"manifest:{manifest}", manifest
    if cfg.runtime == "systemd" or (cfg.runtime is None and (cfg.unit or cfg.unit_file)):
        unit_file = _find_unit(cfg, root)
        if unit_file is None:
            looked = str(cfg.unit_file) if cfg.unit_file else ", ".join(str(d) for d in UNIT_DIRS)
            raise DiscoveryError(
                f"systemd unit {_unit_name(cfg)} not found (looked in {looked}); "
                f"set etcd.unit or etcd.unit_file {where} (or etcd.runtime)"
            )
        return "systemd", "config" if cfg.runtime else f"unit:{unit_file}", unit_file
    if cfg.runtime == "process":
        return "process", "config", None
    if _manifest_present(config, root, manifest):
        return "static-pod", f"manifest:{manifest}", manifest
    unit_file = _find_unit(cfg, root)
    if unit_file is not None:
        return "systemd", f"unit:{unit_file}", unit_file
    if cfg.start_command:
        return "process", "start_command", None
    if cfg.name and cfg.data_dir:
        return None, "config", None  # explicit config only: etcd runs some way we do not manage
    raise DiscoveryError(
        f"cannot tell how etcd runs here: no static-pod manifest {manifest}, no systemd unit "
        f"{_unit_name(cfg)} in {', '.join(str(d) for d in UNIT_DIRS)}, and no etcd.start_command; "
        f"set etcd.runtime {where} with etcd.manifest, etcd.unit or etcd.start_command "
        "(or etcd.name and etcd.data_dir)"
    )


# -- assembly ---------------------------------------------------------------------


def discover(config: AgentConfig, root: Path = Path("/"), *, hostname: Optional[str] = None) -> LocalMember:
    """Work out the local member; explicit config keys always win over what is found.

    ``root`` redirects every read (tests pass a fake tree); paths in the result
    are the node's real paths. ``hostname`` stands in for the node's host name
    where a unit uses systemd's %H specifier (default: the real one).
    """
    cfg = config.etcd
    runtime, origin, artifact = _detect(config, root)

    def host() -> str:
        return hostname if hostname is not None else socket.gethostname()

    if runtime == "static-pod" and artifact is not None:
        if _under(root, artifact).is_file():
            found = _static_pod(artifact, root, origin)
        else:
            found = dataclasses.replace(_static_pod(parked_manifest(config, artifact), root, origin),
                                        manifest=artifact)
    elif runtime == "systemd" and artifact is not None:
        found = _systemd(cfg, root, artifact, origin, host)
    elif runtime == "process":
        found = _process(cfg, origin, config.source)
    else:
        found = _Found(None, "config", f"the explicit [etcd] config in {config.source}", {},
                       _absolute_only("is relative"))
    found = _with_config_file(found, root)

    if config.apiserver is not None and config.apiserver.manifest is not None:
        apiserver_manifest = config.apiserver.manifest
    elif found.manifest is not None:
        apiserver_manifest = found.manifest.parent / APISERVER_MANIFEST_NAME
    else:
        apiserver_manifest = DEFAULT_MANIFEST.parent / APISERVER_MANIFEST_NAME
    return _assemble(config, found, root, apiserver_manifest)


def _member_name(configured: Optional[str], found: _Found, hint: str) -> tuple[str, str]:
    """(name, where it came from): never guessed (etcd itself would call an unnamed member "default")."""
    if configured:
        return configured, "config"
    if found.settings.get("name", ("", ""))[0]:
        return found.settings["name"]
    raise DiscoveryError(f"{found.where}: no member name (no --name or ETCD_NAME; etcd would use 'default'); "
                         + hint)


def _assemble(config: AgentConfig, found: _Found, root: Path, apiserver_manifest: Path) -> LocalMember:
    cfg, s = config.etcd, found.settings
    sources: list[tuple[str, str]] = [("runtime", found.origin)]

    def hint(key: str) -> str:
        return f"set {key} in {config.source}"

    def mapped(flag: str, key: str) -> Path:
        value, source = s[flag]
        try:
            return Path(found.to_host(value))
        except LookupError as exc:
            raise DiscoveryError(
                f"{found.where}: --{flag}={value} (from {source}) {exc}; {hint(key)}"
            ) from None

    def maybe_mapped(flag: str) -> Optional[Path]:
        try:
            return Path(found.to_host(s[flag][0])) if s.get(flag, ("", ""))[0] else None
        except LookupError:
            return None  # informational only: peer files need not be reachable from the host

    name, name_src = _member_name(cfg.name, found, hint("etcd.name"))
    sources.append(("name", name_src))

    if cfg.data_dir is not None:
        data_dir, data_src = cfg.data_dir, "config"
    elif s.get("data-dir", ("", ""))[0]:
        data_dir, data_src = mapped("data-dir", "etcd.data_dir"), s["data-dir"][1]
    elif found.workdir is not None:  # etcd's own default: ${name}.etcd in its working directory
        data_dir, data_src = Path(found.workdir) / f"{name}.etcd", "default"
    else:
        raise DiscoveryError(
            f"{found.where}: no data dir (no --data-dir or ETCD_DATA_DIR, and no working directory "
            f"for etcd's default '{name}.etcd'); " + hint("etcd.data_dir")
        )
    sources.append(("data_dir", data_src))

    endpoints, endpoints_src = _endpoints(cfg, found, hint("etcd.endpoints"))
    sources.append(("endpoints", endpoints_src))

    peer_url: Optional[str] = cfg.peer_url
    if peer_url is not None:
        sources.append(("peer_url", "config"))
    elif s.get("initial-advertise-peer-urls", ("", ""))[0]:
        value, source = s["initial-advertise-peer-urls"]
        peer_url = value.split(",")[0].strip()
        sources.append(("peer_url", source))

    initial_cluster = s["initial-cluster"][0] if s.get("initial-cluster", ("", ""))[0] else None
    if initial_cluster is not None:
        sources.append(("initial_cluster", s["initial-cluster"][1]))

    tls = _client_tls(cfg, found, root, apiserver_manifest=apiserver_manifest, mapped=mapped, sources=sources)
    peer_tls = ClientTLS(
        cacert=maybe_mapped("peer-trusted-ca-file"),
        cert=maybe_mapped("peer-cert-file"),
        key=maybe_mapped("peer-key-file"),
    )
    if found.image:
        sources.append(("image", f"manifest:{found.manifest}"))
    wal_dir: Optional[Path] = cfg.wal_dir
    if wal_dir is not None:
        sources.append(("wal_dir", "config"))
    elif s.get("wal-dir", ("", ""))[0]:
        wal_dir = mapped("wal-dir", "etcd.wal_dir")
        sources.append(("wal_dir", s["wal-dir"][1]))
    quota = s.get("quota-backend-bytes", ("", ""))[0]
    return LocalMember(
        name=name, data_dir=data_dir, endpoints=tuple(endpoints), peer_url=peer_url, tls=tls,
        runtime=found.runtime, manifest=found.manifest, unit=found.unit,
        initial_cluster=initial_cluster, image=found.image, peer_tls=peer_tls, wal_dir=wal_dir,
        quota_backend_bytes=int(quota) if quota.isdigit() and int(quota) > 0 else None, sources=tuple(sources),
    )


def _endpoints(cfg: EtcdSettings, found: _Found, hint: str) -> tuple[list[str], str]:
    if cfg.endpoints:
        return list(cfg.endpoints), "config"
    urls: list[str] = []
    origins: list[str] = []
    for flag in ("listen-client-urls", "advertise-client-urls"):
        if found.settings.get(flag, ("", ""))[0]:
            value, source = found.settings[flag]
            urls += [u.strip() for u in value.split(",") if u.strip()]
            origins.append(source)
    if not origins:
        return [DEFAULT_ENDPOINT], "default"  # etcd's own default listener
    usable = []
    for url in urls:
        try:
            parse_url(url, default_port=2379)
        except ValueError:
            continue  # unix:// sockets and the like
        usable.append(url)
    if not usable:
        raise DiscoveryError(f"{found.where}: no http(s) client URL among {', '.join(urls)}; {hint}")
    return prefer_local(usable), ", ".join(dict.fromkeys(origins))


def _client_tls(
    cfg: EtcdSettings, found: _Found, root: Path, *, apiserver_manifest: Path,
    mapped: Callable[[str, str], Path], sources: list[tuple[str, str]],
) -> ClientTLS:
    """CA, cert and key for the agent's client connection.

    etcd's server certificate is not meant for clients. In order: kubeadm's
    healthcheck-client pair next to the CA, kube-apiserver's etcd client
    certificate (from its manifest), and only then the server pair.
    """
    s = found.settings
    server_tls = any(s.get(f, ("", ""))[0] for f in ("cert-file", "trusted-ca-file"))
    cacert: Optional[Path] = cfg.cacert
    ca_src = "config" if cacert is not None else ""
    cert, key = cfg.cert, cfg.key
    cert_src = "config" if cert is not None else ""
    if server_tls and cacert is None and s.get("trusted-ca-file", ("", ""))[0]:
        cacert, ca_src = mapped("trusted-ca-file", "etcd.cacert"), s["trusted-ca-file"][1]
    if server_tls and cert is None:
        ca_dir = cacert.parent if cacert is not None else None
        if ca_dir is not None and all(
            _under(root, ca_dir / n).is_file() for n in (HEALTHCHECK_CERT, HEALTHCHECK_KEY)
        ):
            cert, key = ca_dir / HEALTHCHECK_CERT, ca_dir / HEALTHCHECK_KEY
            cert_src = f"kubeadm:{cert}"
        else:
            apiserver = _apiserver_etcd_client(root, apiserver_manifest)
            if apiserver is not None:
                cert, key, api_ca = apiserver
                cert_src = f"manifest:{apiserver_manifest}"
                if cfg.cacert is None and api_ca is not None:
                    cacert, ca_src = api_ca, cert_src
            elif s.get("cert-file", ("", ""))[0] and s.get("key-file", ("", ""))[0]:
                cert, key = mapped("cert-file", "etcd.cert"), mapped("key-file", "etcd.key")
                cert_src = f"{s['cert-file'][1]} (fallback: etcd's server certificate)"
    if cacert is not None:
        sources.append(("tls.cacert", ca_src))
    if cert is not None:
        sources += [("tls.cert", cert_src), ("tls.key", cert_src)]
    return ClientTLS(cacert=cacert, cert=cert, key=key)


def _apiserver_etcd_client(root: Path, manifest: Path) -> Optional[tuple[Path, Path, Optional[Path]]]:
    """kube-apiserver's --etcd-certfile/--etcd-keyfile/--etcd-cafile as host paths, if usable."""
    if not _under(root, manifest).is_file():
        return None
    pod = _load_pod(root, manifest, "fix it, or set etcd.cert and etcd.key")
    container = find_container(pod, "kube-apiserver")
    if container is None:
        return None
    try:
        flags = apiserver_flags(container_argv(container)).values
        cert = host_path(pod, container, flags["etcd-certfile"])
        key = host_path(pod, container, flags["etcd-keyfile"])
        ca = host_path(pod, container, flags["etcd-cafile"]) if flags.get("etcd-cafile") else None
    except (ValueError, KeyError, LookupError):
        return None  # no usable client certificate there; the caller falls back
    return Path(cert), Path(key), Path(ca) if ca else None
