"""The readers for etcd run as configured: a start command, or explicit config alone.

With ``etcd.start_command`` (the process runtime) the command line is etcd's
settings, with variables assigned in front of it (``env VAR=x etcd ...``).
With neither a manifest, a unit nor a command, only explicit config
describes etcd (``etcd.name`` and ``etcd.data_dir``), and etcd runs some way
the agent does not manage.
"""

from __future__ import annotations

from etcdguard.agent.config import AgentConfig, EtcdSettings
from etcdguard.agent.discovery.found import Found, absolute_only, env_settings
from etcdguard.agent.discovery.goflags import FlagError, etcd_flags
from etcdguard.agent.discovery.systemd_unit import etcd_command
from etcdguard.common.base.errors import DiscoveryError


def read_start_command(cfg: EtcdSettings, origin: str, config_source: str) -> Found:
    """etcd's settings from ``etcd.start_command``."""
    words, assigned = etcd_command([(w, None) for w in cfg.start_command or ()], {})
    settings = env_settings({var: (value, "start_command") for var, value in assigned.items()})
    try:
        flags = etcd_flags([w for w, _ in words])
    except FlagError as exc:
        raise DiscoveryError(f"etcd.start_command runs etcd with a command line etcd refuses: {exc}; "
                             f"fix etcd.start_command in {config_source}") from None
    settings.update((k, (v, "start_command")) for k, v in flags.values.items())
    return Found(
        runtime="process", origin=origin, where="etcd.start_command", settings=settings,
        to_host=absolute_only("is relative and the working directory of etcd.start_command is not known"),
    )


def explicit_only(config: AgentConfig) -> Found:
    """No runtime settings at all: everything comes from the [etcd] config and defaults."""
    return Found(None, "config", f"the explicit [etcd] config in {config.source}", {}, absolute_only("is relative"))
