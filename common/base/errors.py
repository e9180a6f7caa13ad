"""Typed errors. Each carries the process exit code an operator or script relies on.

Exit codes (design contract): 0 ok, 1 operation failed, 2 usage or config error,
3 refused because unsafe.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSAFE = 3


class EtcdguardError(Exception):
    """Base of every error etcdguard reports to an operator."""

    exit_code = EXIT_FAILED


class ConfigError(EtcdguardError):
    """The configuration (file, key or value) is wrong; nothing was changed."""

    exit_code = EXIT_USAGE


class UsageError(EtcdguardError):
    """A command-line argument is wrong; nothing was changed."""

    exit_code = EXIT_USAGE


class DiscoveryError(EtcdguardError):
    """How etcd runs on this node could not be worked out."""

    exit_code = EXIT_USAGE


class EtcdUnavailable(EtcdguardError):
    """The local etcd member did not answer (or answered with an error)."""


class SnapshotError(EtcdguardError):
    """Taking or storing a snapshot failed; the catalog is unchanged."""


class SnapshotCorrupt(EtcdguardError):
    """A snapshot file failed its integrity check."""


class Aborted(EtcdguardError):
    """Work was interrupted on request (SIGTERM); partial output was removed."""


class UnsafeRefusal(EtcdguardError):
    """Refused because going on could lose data or break the cluster."""

    exit_code = EXIT_UNSAFE


class DiskError(EtcdguardError):
    """A file or directory could not be read or written (disk full, permission denied, read-only);
    what was being written was removed again."""


class ToolError(EtcdguardError):
    """An external tool (etcdutl, etcdctl, systemctl) failed."""
