"""Command lines read the way the programs themselves read them.

etcd parses its flags with Go's standard ``flag`` package, kube-apiserver
with spf13/pflag. Discovery and the runtime both need values from those
command lines (etcd's ``--data-dir``, the apiserver's ``--secure-port``), and
a value read differently from how the program reads it is a wrong value: for
``--data-dir -weird`` etcd's data dir is ``-weird``. There is no Python
implementation of either package, so their rules are written here, once:

Go ``flag``: ``-f`` and ``--f`` are the same flag; ``-f=v``, and ``-f v`` for a
flag that takes a value (the next word is the value even when it starts with
``-``); a boolean flag takes a value only with ``=`` (``-f=false``), never the
next word; ``--`` ends the flags; the first word that is not a flag (or is
``-``) ends them too; a repeated flag's last value wins. etcd then refuses to
start when any word is left over (``'x' is not a valid flag``).

pflag (``interspersed=True``): the same for what the apiserver reader needs,
except that words that are not flags may appear between flags.

Which flags are booleans is not in the command line: it comes from the
program's flag set, so the sets below name them. etcd's sets are complete for
3.4, 3.5, 3.6 and 3.7 (3.6 renamed the ``--experimental-*`` flags and turned
some into ``--feature-gates``; 3.7 dropped the old names). A flag in neither
set (a newer etcd's, or a typo etcd itself would refuse) is read the way it is
written: with the next word as its value unless that word is a flag too, or
with none at the end of the line, so it never swallows a flag the agent reads.
kube-apiserver has hundreds of flags, so its reader names only the flags it
reads (they always take a value) and reads any other flag that way too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

# etcd flags (3.4 to 3.7) that are booleans (the BoolVar flags of each release's flag set).
ETCD_BOOL_FLAGS = frozenset({
    "auto-tls", "client-cert-auth", "debug", "discovery-insecure-skip-tls-verify", "discovery-insecure-transport",
    "enable-distributed-tracing", "enable-grpc-gateway", "enable-log-rotation", "enable-pprof",
    "enable-v2", "experimental-compact-hash-check-enabled", "experimental-enable-distributed-tracing",
    "experimental-enable-lease-checkpoint", "experimental-enable-lease-checkpoint-persist",
    "experimental-initial-corrupt-check", "experimental-memory-mlock",
    "experimental-peer-skip-client-san-verification", "experimental-stop-grpc-service-on-defrag",
    "experimental-txn-mode-write-with-shared-buffer", "force-new-cluster", "initial-election-tick-advance",
    "memory-mlock", "peer-auto-tls", "peer-client-cert-auth", "peer-skip-client-san-verification", "pre-vote",
    "socket-reuse-address", "socket-reuse-port", "strict-reconfig-check", "unsafe-no-fsync",
    "version", "help", "h",
})

# etcd flags (3.4 to 3.7) that take a value (from `etcd --help` of each): the next word is the value,
# even when it starts with "-".
ETCD_VALUE_FLAGS = frozenset({
    "advertise-client-urls", "auth-token", "auth-token-ttl", "auto-compaction-mode", "auto-compaction-retention",
    "backend-batch-interval", "backend-batch-limit", "backend-bbolt-freelist-type", "bcrypt-cost",
    "bootstrap-defrag-threshold-megabytes", "cert-file", "cipher-suites", "client-cert-allowed-hostname",
    "client-cert-file", "client-crl-file", "client-key-file", "compact-hash-check-time", "compaction-batch-limit",
    "compaction-sleep-interval", "config-file", "corrupt-check-time", "cors", "data-dir", "discovery",
    "discovery-cacert", "discovery-cert", "discovery-dial-timeout", "discovery-endpoints", "discovery-fallback",
    "discovery-keepalive-time", "discovery-keepalive-timeout", "discovery-key", "discovery-password",
    "discovery-proxy", "discovery-request-timeout", "discovery-srv", "discovery-srv-name", "discovery-token",
    "discovery-user", "distributed-tracing-address", "distributed-tracing-instance-id",
    "distributed-tracing-sampling-rate", "distributed-tracing-service-name", "downgrade-check-time",
    "election-timeout", "experimental-backend-bbolt-freelist-type", "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-compact-hash-check-time", "experimental-compaction-batch-limit",
    "experimental-compaction-sleep-interval", "experimental-corrupt-check-time",
    "experimental-distributed-tracing-address", "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate", "experimental-distributed-tracing-service-name",
    "experimental-downgrade-check-time", "experimental-enable-v2v3", "experimental-snapshot-catchup-entries",
    "experimental-warning-apply-duration", "experimental-warning-unary-request-duration",
    "experimental-watch-progress-notify-interval", "feature-gates", "grpc-keepalive-interval",
    "grpc-keepalive-min-time", "grpc-keepalive-timeout", "heartbeat-interval", "host-whitelist",
    "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token", "key-file",
    "listen-client-http-urls", "listen-client-urls", "listen-metrics-urls", "listen-peer-urls", "log-format",
    "log-level", "log-output", "log-outputs", "log-package-levels", "log-rotation-config-json", "logger",
    "max-concurrent-streams", "max-learners", "max-request-bytes", "max-snapshots", "max-txn-ops", "max-wals",
    "metrics", "name", "peer-cert-allowed-cn", "peer-cert-allowed-hostname", "peer-cert-file",
    "peer-client-cert-file", "peer-client-key-file", "peer-crl-file", "peer-key-file", "peer-trusted-ca-file",
    "proxy", "proxy-dial-timeout", "proxy-failure-wait", "proxy-read-timeout", "proxy-refresh-interval",
    "proxy-write-timeout", "quota-backend-bytes", "raft-read-timeout", "raft-write-timeout",
    "self-signed-cert-validity", "snapshot-catchup-entries", "snapshot-count", "tls-max-version", "tls-min-version",
    "trusted-ca-file", "v2-deprecation", "wal-dir", "warning-apply-duration", "warning-unary-request-duration",
    "watch-progress-notify-interval",
})

# kube-apiserver flags that take no separate value (pflag booleans and NoOptDefVal flags).
APISERVER_BOOL_FLAGS = frozenset({
    "allow-privileged", "anonymous-auth", "enable-bootstrap-token-auth", "enable-aggregator-routing",
    "enable-garbage-collector", "enable-priority-and-fairness", "enable-logs-handler", "profiling",
    "contention-profiling", "service-account-lookup", "service-account-extend-token-expiration",
    "watch-cache", "permit-port-sharing", "permit-address-sharing", "aggregator-reject-forwarding-redirect",
    "strict-transport-security-directives-preload", "logtostderr", "alsologtostderr", "one-output",
    "skip-headers", "skip-log-headers", "add-dir-header", "version", "help", "h",
})

# kube-apiserver flags the agent reads (discovery's client certificate, the runtime's stop proof).
APISERVER_VALUE_FLAGS = frozenset({
    "secure-port", "bind-address", "advertise-address", "etcd-certfile", "etcd-keyfile", "etcd-cafile",
    "etcd-servers", "tls-cert-file", "tls-private-key-file",
})

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class FlagError(ValueError):
    """A command line the program itself would refuse; the message says as the program would."""


@dataclass(frozen=True)
class Flags:
    """Flags of one command line: the last value of each, and where it stood."""

    values: dict[str, str] = field(default_factory=dict)       # name -> value (booleans as "true"/"false")
    positions: dict[str, int] = field(default_factory=dict)    # name -> index in argv of the word holding it
    args: tuple[str, ...] = ()                                  # words that are not flags, in order

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.values


def parse_flags(argv: Sequence[str], bool_flags: Collection[str] = frozenset(), *,
                interspersed: bool = False, value_flags: Optional[Collection[str]] = None) -> Flags:
    """Parse ``argv`` (``argv[0]`` is the program) as Go's ``flag`` package does.

    ``bool_flags`` are the flags that never take the next word as their value;
    every other flag takes it. With ``value_flags`` the flag set is known only
    in part: those take the next word, and a flag in neither set takes it only
    when it is not a flag itself (none at the end). With ``interspersed``
    (pflag), words that are not flags do not end the flags. Raises FlagError
    for what the program would refuse: a malformed flag (``---x``, ``-=x``), a
    value flag with nothing after it, a bad boolean.
    """
    values: dict[str, str] = {}
    positions: dict[str, int] = {}
    args: list[str] = []
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            args.extend(argv[i + 1:])
            break
        if len(word) < 2 or not word.startswith("-"):
            if not interspersed:
                args.extend(argv[i:])
                break
            args.append(word)
            i += 1
            continue
        name = word[2:] if word.startswith("--") else word[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {word}")
        name, has_value, value = name.partition("=")
        if name in bool_flags:
            values[name], positions[name] = _bool_value(name, value) if has_value else "true", i
        elif has_value:
            values[name], positions[name] = value, i
        elif value_flags is not None and name not in value_flags and (
                i + 1 >= len(argv) or argv[i + 1].startswith("-")):
            values[name], positions[name] = "true", i   # a flag of unknown kind, written without a value
        elif i + 1 < len(argv):
            i += 1
            values[name], positions[name] = argv[i], i
        else:
            raise FlagError(f"flag needs an argument: -{name}")
        i += 1
    return Flags(values, positions, tuple(args))


def _bool_value(name: str, value: str) -> str:
    """``-name=value`` of a boolean flag, as Go's strconv.ParseBool reads it: "true" or "false"."""
    if value in _TRUE:
        return "true"
    if value in _FALSE:
        return "false"
    raise FlagError(f'invalid boolean value "{value}" for -{name}')


def etcd_flags(argv: Sequence[str]) -> Flags:
    """etcd's flags from its command line; FlagError where etcd itself would not start.

    When ``argv`` runs some wrapper rather than etcd itself, words the wrapper
    may take as arguments are left in ``args`` instead of refused. A flag no
    etcd release 3.4 to 3.7 knows takes the next word only when that word is
    not a flag.
    """
    runs_etcd = bool(argv) and posixpath.basename(argv[0]) == "etcd"
    flags = parse_flags(argv, ETCD_BOOL_FLAGS, interspersed=not runs_etcd, value_flags=ETCD_VALUE_FLAGS)
    if runs_etcd and flags.args:
        raise FlagError(f"'{flags.args[0]}' is not a valid flag")
    return flags


def apiserver_flags(argv: Sequence[str]) -> Flags:
    """kube-apiserver's flags from its command line (pflag: stray words between flags allowed)."""
    return parse_flags(argv, APISERVER_BOOL_FLAGS, interspersed=True, value_flags=APISERVER_VALUE_FLAGS)


def replace_etcd_flags(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """etcd's command line with every occurrence of the flags in ``values`` removed and each set once, as
    ``--name=value``, at the end (pure). FlagError when the command does not run etcd itself (a wrapper's
    words cannot be edited safely) or when etcd would refuse it."""
    if not argv or posixpath.basename(argv[0]) != "etcd":
        raise FlagError(f"{argv[0] if argv else 'an empty command'} is not etcd itself; its flags cannot be edited")
    etcd_flags(argv)   # refused as etcd would refuse it
    out = [argv[0]]
    i = 1
    while i < len(argv):
        word = argv[i]
        name, has_value, _ = (word[2:] if word.startswith("--") else word[1:]).partition("=")
        takes_next = not has_value and name not in ETCD_BOOL_FLAGS and (
            name in ETCD_VALUE_FLAGS or (i + 1 < len(argv) and not argv[i + 1].startswith("-")))
        span = 2 if takes_next else 1
        if name not in values:
            out.extend(argv[i:i + span])
        i += span
    return out + [f"--{name}={value}" for name, value in values.items()]
