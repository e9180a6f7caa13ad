"""The systemd reader: etcd's settings from its unit, the unit's drop-ins and environment files.

Which files systemd would read is decided here (the unit directories in
systemd's order, a template for an instance, drop-ins from every directory
with /etc masking /run masking /usr/lib); what they say is parsed by
systemd_unit.py. Variables from ``Environment=`` are overridden by
``EnvironmentFile=`` ones, in order, and both by assignments in front of the
etcd command in ExecStart=; etcd's flags win over all of them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from etcdguard.agent.config import EtcdSettings
from etcdguard.agent.discovery.found import Found, Settings, env_settings
from etcdguard.agent.discovery.goflags import FlagError, etcd_flags
from etcdguard.agent.discovery.nodefiles import read_text, under
from etcdguard.agent.discovery.systemd_unit import (
    ServiceSpec,
    etcd_command,
    exec_words,
    expand_specifiers,
    parse_env_file,
    read_service,
)
from etcdguard.common.base.errors import DiscoveryError

DEFAULT_UNIT = "etcd.service"
UNIT_DIRS = tuple(
    Path(d)
    for d in ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
)
_HINT = "set etcd.unit / etcd.unit_file (or etcd.runtime)"

Words = list[tuple[str, Optional[str]]]  # (argv word, the variable it came from)
Environment = dict[str, tuple[str, str]]  # variable -> (value, source)


def unit_name(cfg: EtcdSettings) -> str:
    """The unit to read: etcd.unit, else the name of etcd.unit_file, else etcd.service."""
    unit = cfg.unit or (cfg.unit_file.name if cfg.unit_file else DEFAULT_UNIT)
    return unit if "." in unit else unit + ".service"


def _unit_candidates(unit: str) -> list[str]:
    names = [unit]
    base, _, instance = unit.partition("@")
    if instance:  # etcd@m1.service falls back to the template etcd@.service
        names.append(base + "@" + instance[instance.rfind("."):])
    return names


def find_unit(cfg: EtcdSettings, root: Path) -> Optional[Path]:
    """The unit file systemd would load for etcd's unit, None when there is none."""
    if cfg.unit_file is not None:
        return cfg.unit_file if under(root, cfg.unit_file).is_file() else None
    for name in _unit_candidates(unit_name(cfg)):
        for d in UNIT_DIRS:
            if under(root, d / name).is_file():
                return d / name
    return None


def _dropins(root: Path, unit_file: Path, unit: str) -> list[Path]:
    """``<unit>.d/*.conf`` from every unit directory, sorted by name; /etc masks /run masks /usr/lib."""
    dirs = list(UNIT_DIRS) + ([unit_file.parent] if unit_file.parent not in UNIT_DIRS else [])
    chosen: dict[str, Path] = {}
    for d in dirs:
        for name in dict.fromkeys(_unit_candidates(unit) + [unit_file.name]):
            for f in sorted(under(root, d / f"{name}.d").glob("*.conf")):
                chosen.setdefault(f.name, d / f"{name}.d" / f.name)
    return [chosen[k] for k in sorted(chosen)]


def _env_file_paths(root: Path, path: str) -> list[Path]:
    """EnvironmentFile= may be a glob; the result is node paths (without the root)."""
    if not any(c in path for c in "*?["):
        return [Path(path)]
    return sorted(Path("/") / p.relative_to(root) for p in root.glob(path.lstrip("/")))


def _service(root: Path, unit_file: Path, unit: str, hostname: Callable[[], str]) -> ServiceSpec:
    """The unit's [Service] with its drop-ins applied."""
    files = [unit_file, *_dropins(root, unit_file, unit)]
    texts = [(str(f), read_text(root, f, "systemd unit file", _HINT)) for f in files]
    try:
        return read_service(texts, lambda v: expand_specifiers(v, unit, hostname))
    except ValueError as exc:
        raise DiscoveryError(f"systemd unit {unit}: {exc}") from None


def _environment(root: Path, unit: str, spec: ServiceSpec) -> Environment:
    """Environment= variables, then the EnvironmentFile= ones over them, in order."""
    env: Environment = {name: (value, f"unit:{f}") for name, value, f in spec.environment}
    for path, optional, f in spec.environment_files:
        for p in _env_file_paths(root, path):
            if optional and not under(root, p).is_file():
                continue
            text = read_text(root, p, f"EnvironmentFile of {unit} (in {f})",
                             "create it or make it optional with a leading '-'")
            env.update((k, (v, f"env:{p}")) for k, v in parse_env_file(text).items())
    return env


def _etcd_exec(spec: ServiceSpec, env: Environment) -> tuple[Words, dict[str, str], str]:
    """(etcd's argv words, variables assigned in front of it, the file of the ExecStart= that runs it).

    Only one ExecStart may run a notify/simple service; the one that runs etcd is preferred.
    """
    values = {k: v for k, (v, _) in env.items()}
    candidates = []
    for command, f in spec.exec_start:
        try:
            words, assigned = etcd_command(exec_words(command, values), values)
        except ValueError as exc:
            raise DiscoveryError(f"{f}: ExecStart={command}: {exc}") from None
        candidates.append((words, assigned, f))
    return next(
        (c for c in reversed(candidates) if c[0] and posixpath.basename(c[0][0][0]) == "etcd"),
        candidates[-1],
    )


def _flag_settings(words: Sequence[tuple[str, Optional[str]]], env: Environment, exec_file: str) -> Settings:
    """etcd's flags on the command line; a value that came from a variable is credited to where that is set."""
    try:
        flags = etcd_flags([w for w, _ in words])
    except FlagError as exc:
        raise DiscoveryError(f"{exec_file}: ExecStart= runs etcd with a command line etcd refuses: {exc}; "
                             "fix the unit") from None
    out: Settings = {}
    for flag, value in flags.values.items():
        from_var = words[flags.positions[flag]][1]
        out[flag] = (value, env[from_var][1] if from_var in env else f"unit:{exec_file}")
    return out


def _in_workdir(workdir: Optional[str]) -> Callable[[str], str]:
    """Path mapping for a unit: absolute paths as they are, relative ones below WorkingDirectory=."""

    def to_host(path: str) -> str:
        if path.startswith("/"):
            return posixpath.normpath(path)
        if workdir is None:
            raise LookupError("is relative and the unit sets no absolute WorkingDirectory=")
        return posixpath.normpath(posixpath.join(workdir, path))

    return to_host


def read_systemd(cfg: EtcdSettings, root: Path, unit_file: Path, origin: str, hostname: Callable[[], str]) -> Found:
    """etcd's settings as its systemd unit gives them."""
    unit = unit_name(cfg)
    spec = _service(root, unit_file, unit, hostname)
    env = _environment(root, unit, spec)
    if not spec.exec_start:
        raise DiscoveryError(f"systemd unit {unit} ({unit_file}) has no ExecStart=; {_HINT}")
    words, assigned, exec_file = _etcd_exec(spec, env)
    env.update((k, (v, f"unit:{exec_file}")) for k, v in assigned.items())
    settings = env_settings(env)
    settings.update(_flag_settings(words, env, exec_file))
    workdir = spec.working_directory if (spec.working_directory or "").startswith("/") else None
    return Found(
        runtime="systemd", origin=origin, where=f"systemd unit {unit} ({unit_file})",
        settings=settings, to_host=_in_workdir(workdir), unit=unit, workdir=workdir,
    )
