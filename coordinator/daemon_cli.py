"""etcdguard-coordinator: the coordinator daemon (systemd Type=notify), and `check`.

Without a subcommand (or with ``run``) the daemon runs. ``check`` validates the
config, keys, state and socket directories and the vault, and reaches every
agent; it changes nothing.

Exit codes: 0 ok (the daemon stopped cleanly), 1 failed or problems found,
2 usage or config error (systemd does not restart on 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Optional

from etcdguard.common.base.clikit import CommandLine
from etcdguard.common.base.errors import EXIT_FAILED, EXIT_OK, EtcdguardError
from etcdguard.coordinator.config import DEFAULT_CONFIG_PATH, load_coordinator_config

PROG = "etcdguard-coordinator"
log = logging.getLogger(__name__)

CLI = CommandLine(
    PROG, "etcdguard coordinator: keeps the off-node snapshot vault and serves etcdguardctl.", DEFAULT_CONFIG_PATH,
    epilog="Without a subcommand the daemon runs (same as `run`). SIGHUP reloads the config; SIGTERM lets a "
           "running pull finish (up to 30 s) and stops. Exit codes: 0 ok, 1 failed or problems found, "
           "2 usage or config error.",
    default_command="run",
)


@CLI.command("run", "run the coordinator daemon (the default)", lambda p: None)
def cmd_run(args: argparse.Namespace) -> int:
    try:
        from etcdguard.coordinator.daemon import CoordinatorDaemon

        path = args.config or DEFAULT_CONFIG_PATH
        config = load_coordinator_config(path)
        daemon = CoordinatorDaemon(path, config)
        daemon.install_signal_handlers()
        return daemon.run()
    except EtcdguardError as exc:
        log.error("%s", exc)   # setup_logging sends this to stderr (the journal under systemd)
        return exc.exit_code
    except OSError as exc:   # the last resort: the daemon turns the errors it expects into its own message
        from etcdguard.common.base.fsutil import disk_error

        error = disk_error("file or socket error", exc)
        log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


@CLI.command("check", "validate config, keys, socket directory and vault, and reach every agent", _check_args)
def cmd_check(args: argparse.Namespace) -> int:
    from etcdguard.common.checks import render_checks
    from etcdguard.coordinator.checks import run_checks

    config = load_coordinator_config(args.config or DEFAULT_CONFIG_PATH)
    results = run_checks(config)
    problems = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"config": config.source, "checks": [r.to_json() for r in results], "ok": not problems},
                         indent=2, sort_keys=True))
    else:
        print(f"coordinator {config.source}: {len(config.members)} member(s), vault {config.vault.backend}")
        print("\n".join(render_checks(results)))
    return EXIT_FAILED if problems else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return CLI.main(argv)


if __name__ == "__main__":
    sys.exit(main())
