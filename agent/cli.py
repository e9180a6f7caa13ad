"""etcdguard-agent: the agent daemon and its one-shot commands.

Exit codes: 0 ok, 1 operation failed, 2 usage or config error, 3 refused as unsafe.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from etcdguard.agent.discovery.member import ClientTLS
from etcdguard.common.base.clikit import CommandLine, table
from etcdguard.common.base.durations import format_bytes, format_duration, stamp_times
from etcdguard.common.base.errors import EXIT_FAILED, EXIT_OK, EtcdguardError, UsageError

if TYPE_CHECKING:
    from etcdguard.agent.config import AgentConfig
    from etcdguard.agent.discovery.member import LocalMember

PROG = "etcdguard-agent"
# = etcdguard.agent.config.DEFAULT_CONFIG_PATH (a test keeps them equal); the config module is imported
# only by commands that read a config: `snapshot --endpoints ... --output F` needs none.
DEFAULT_CONFIG_PATH = Path("/etc/etcdguard/agent.toml")
log = logging.getLogger(__name__)

CLI = CommandLine(
    PROG, "etcdguard agent: verified etcd snapshots and node-local restores.", DEFAULT_CONFIG_PATH,
    epilog="Without a subcommand the daemon runs (same as `run`). "
           "Exit codes: 0 ok, 1 operation failed, 2 usage or config error, 3 refused as unsafe.",
    default_command="run",
)
command = CLI.command


def load_config(args: argparse.Namespace, required: bool = True) -> Optional[AgentConfig]:
    """The config named by --config, else the default file; None if absent and not required."""
    path: Optional[Path] = args.config
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists() and not required:
            return None
        path = DEFAULT_CONFIG_PATH
    from etcdguard.agent.config import load_agent_config

    return load_agent_config(path)


def discover_member(config: AgentConfig) -> LocalMember:
    from etcdguard.agent.discovery.discover import discover

    return discover(config)


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(stamp_times(obj), indent=2, sort_keys=True))
    else:
        print(text)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


# -- run -------------------------------------------------------------------
@command("run", "run the agent daemon (the default)", lambda p: None)
def cmd_run(args: argparse.Namespace) -> int:
    from etcdguard.agent.daemon import AgentDaemon

    config = load_config(args)
    assert config is not None
    daemon = AgentDaemon(args.config or DEFAULT_CONFIG_PATH, config)
    from etcdguard.agent.control.server import attach_server
    attach_server(daemon)
    daemon.install_signal_handlers()
    return daemon.run()


# -- check -----------------------------------------------------------------
@command("check", "validate config and discovery; print the member and every problem", _json_flag)
def cmd_check(args: argparse.Namespace) -> int:
    from etcdguard.agent.checks import run_checks
    from etcdguard.common.checks import render_checks

    config = load_config(args)
    assert config is not None
    member = discover_member(config)
    results = run_checks(config, member)
    problems = [r for r in results if not r.ok]
    if args.json:
        emit(args, {"member": member.to_json(), "checks": [r.to_json() for r in results],
                    "ok": not problems}, "")
    else:
        print(f"member {member.name} ({member.runtime or 'unknown runtime'})")
        print(f"  data dir   {member.data_dir}")
        print(f"  endpoints  {', '.join(member.endpoints)}")
        print(f"  peer url   {member.peer_url or '-'}")
        if member.tls.enabled:
            print(f"  tls        ca={member.tls.cacert} cert={member.tls.cert} key={member.tls.key}")
        for field, source in member.sources:
            log.debug("%s from %s", field, source)
        print("\n".join(render_checks(results)))
    return EXIT_FAILED if problems else EXIT_OK


# -- snapshot --------------------------------------------------------------
def _snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write the snapshot to FILE instead of the store (like etcdctl snapshot save)")
    _json_flag(p)
    g = p.add_argument_group("connection (etcdctl's flags; override the config, or replace it)")
    g.add_argument("--endpoints", metavar="URL", help="the member to snapshot (exactly one)")
    g.add_argument("--cacert", type=Path, metavar="FILE", help="CA bundle of the etcd server")
    g.add_argument("--cert", type=Path, metavar="FILE", help="client certificate")
    g.add_argument("--key", type=Path, metavar="FILE", help="client key")


def _endpoint_from_flag(value: str, tls: bool) -> str:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if len(urls) != 1:
        raise UsageError(f"--endpoints: a snapshot is taken from exactly one member, got {len(urls)}")
    url = urls[0]
    if "://" not in url:
        url = ("https://" if tls else "http://") + url
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--endpoints {value!r}: expected http(s)://HOST:PORT")
    return url


def _progress_printer(enabled: bool) -> Optional[Callable[[int], None]]:
    if not enabled:
        return None
    tty = sys.stderr.isatty()

    def show(n: int) -> None:
        if tty:
            sys.stderr.write(f"\rreceived {format_bytes(n)}   ")
            sys.stderr.flush()
        elif n % (64 << 20) < (8 << 20):
            sys.stderr.write(f"received {format_bytes(n)}\n")
    return show


@command("snapshot", "take one verified snapshot now", _snapshot_args)
def cmd_snapshot(args: argparse.Namespace) -> int:
    # Only what this command runs is imported: it is a one-shot command, timed against etcdctl.
    from etcdguard.agent.snapshots.take import Source, save_to_file
    from etcdguard.common.snapshot.tools import find_status_tool

    for flag in ("cacert", "cert", "key"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise UsageError(f"--{flag} {path}: no such file")
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key must be given together")
    # Given etcdctl's flags and no --config, work like etcdctl: ignore any default config file.
    config = None if args.endpoints and args.config is None else load_config(args)
    flag_tls = ClientTLS(args.cacert, args.cert, args.key)
    if config is None:
        if args.output is None:
            raise UsageError(f"no config file ({DEFAULT_CONFIG_PATH}): give --output FILE for the snapshot")
        endpoint = _endpoint_from_flag(args.endpoints, flag_tls.enabled)
        source = Source(endpoint, flag_tls)
        tool = None
        try:
            tool = find_status_tool()
        except EtcdguardError as exc:
            log.warning("%s: the revision recorded will be a lower bound", exc)
    else:
        member = discover_member(config)
        endpoint = _endpoint_from_flag(args.endpoints, True) if args.endpoints else member.endpoint
        tls = flag_tls if flag_tls.enabled else member.tls
        source = Source(endpoint, tls, member.name, config.etcd.dial_timeout)
    progress = _progress_printer(not args.json)
    if args.output is not None:
        if config is not None:
            try:
                tool = find_status_tool(config.etcd.restore_tool)
            except EtcdguardError as exc:
                log.warning("%s: the revision recorded will be a lower bound", exc)
                tool = None
        meta = save_to_file(source, args.output, tool=tool, progress=progress,
                            timeout=config.backup.timeout if config else 1800.0)
    else:
        from etcdguard.agent.metrics import AgentMetrics
        from etcdguard.agent.snapshots.backup import BackupRunner

        assert config is not None
        runner = BackupRunner(config, member, AgentMetrics())
        runner.store.prepare()
        meta = runner.run_once(progress=progress)
    if progress is not None and sys.stderr.isatty():
        sys.stderr.write("\n")
    emit(args, meta.to_json(),
         f"snapshot saved: {meta.path}\n  size {format_bytes(meta.size)} ({meta.size} bytes), "
         f"revision {meta.revision}, sha256 {meta.sha256}\n  verified: SHA-256 trailer ok, "
         f"took {format_duration(meta.duration_seconds)}")
    return EXIT_OK


# -- verify ----------------------------------------------------------------
def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="snapshot file to check")
    _json_flag(p)


@command("verify", "check a snapshot file is intact and restorable (trailer, bbolt, snapshot status, sidecar)",
         _verify_args)
def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 only for a file a restore would accept: its SHA-256 trailer, bbolt meta pages,
    `snapshot status` (where an etcd tool is found) and its sidecar (if any) all agree."""
    from etcdguard.common.base.errors import SnapshotCorrupt
    from etcdguard.common.snapshot.integrity import read_sidecar, sidecar_problems, verify_restorable
    from etcdguard.common.snapshot.tools import find_tool

    sidecar = Path(str(args.file) + ".json")
    config = None
    try:
        config = load_config(args, required=False)
    except EtcdguardError as exc:
        if args.config is not None:
            raise
        log.warning("%s: looking for an etcd tool on PATH instead", exc)   # verify needs no config
    tool = None
    try:
        tool = find_tool(config.etcd.restore_tool if config is not None else None)
    except EtcdguardError as exc:
        log.warning("%s: `snapshot status` not run, the file is checked without an etcd tool", exc)
    try:
        try:
            recorded = read_sidecar(args.file)
        except ValueError as exc:
            raise SnapshotCorrupt(f"unreadable metadata sidecar: {exc}") from None
        check = verify_restorable(args.file, tool=tool)
        if recorded is not None:
            problems = sidecar_problems(recorded, check.digest, check.revision)
            if problems:
                raise SnapshotCorrupt(f"{args.file}: does not match its sidecar {sidecar}: {'; '.join(problems)}")
    except SnapshotCorrupt as exc:
        if args.json:
            emit(args, {"path": str(args.file), "ok": False, "error": str(exc), "exit": EXIT_FAILED}, "")
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise
    d = check.digest
    status = (f"{check.tool} snapshot status: revision {check.revision}, {check.total_keys} keys"
              if check.tool else "no etcd tool found: snapshot status not run")
    emit(args, {"path": str(args.file), "ok": True, "size": d.size, "sha256": d.sha256,
                "sidecar": sidecar.exists(), "revision": check.revision, "total_keys": check.total_keys,
                "tool": check.tool, "members": sorted(m.name for m in check.members),
                "cluster_id_computed": check.computed_cluster_id},
         f"ok: {args.file}: {format_bytes(d.size)}, sha256 {d.sha256}, SHA-256 trailer matches, "
         f"bbolt meta pages valid; {status}"
         + (", sidecar matches" if sidecar.exists() else ""))
    return EXIT_OK


# -- snapshots ---------------------------------------------------------------
@command("snapshots", "list the snapshots in the local store, newest first", _json_flag)
def cmd_snapshots(args: argparse.Namespace) -> int:
    import time

    from etcdguard.agent.snapshots.store import SnapshotStore

    config = load_config(args)
    assert config is not None
    metas = SnapshotStore(config.backup.dir).list()
    if args.json:
        emit(args, [m.to_json() for m in metas], "")
        return EXIT_OK
    if not metas:
        print(f"no snapshots in {config.backup.dir}")
        return EXIT_OK
    now = time.time()
    rows = [["NAME", "TAKEN", "AGE", "SIZE", "REVISION", "SHA256", "BUNDLE", "PINNED"]]
    for m in metas:
        age = now - m.created_unix
        when = format_duration(age) if age >= 0 else f"{format_duration(-age)} IN THE FUTURE"
        rows.append([m.name, m.created_at, when, format_bytes(m.size), str(m.revision), m.sha256[:16],
                     m.bundle or "-", m.pinned or "-"])
    print(table(rows))
    return EXIT_OK


def _load_extensions() -> None:
    """Commands that live in their own modules register themselves on import."""
    import importlib

    for module in ("restore.cli", "snapshots.cli"):
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    _load_extensions()
    return CLI.main(argv)   # an OSError no command expected is one line there too (agent/base/clikit.py)
