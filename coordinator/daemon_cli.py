"""etcdguard-coordinator: runs the coordinator daemon (systemd Type=notify).

Exit codes: 0 stopped cleanly, 1 failed, 2 usage or config error (systemd does not restart on 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from etcdguard.agent import __version__
from etcdguard.agent.base.errors import EtcdguardError
from etcdguard.agent.base.logsetup import setup_logging
from etcdguard.coordinator.config import DEFAULT_CONFIG_PATH, load_coordinator_config

PROG = "etcdguard-coordinator"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="etcdguard coordinator: keeps the off-node snapshot vault and serves etcdguardctl.",
        epilog="SIGHUP reloads the config; SIGTERM lets a running pull finish (up to 30 s) and stops.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="PATH",
                        help=f"coordinator config file (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        from etcdguard.coordinator.daemon import CoordinatorDaemon

        config = load_coordinator_config(args.config)
        daemon = CoordinatorDaemon(args.config, config)
        daemon.install_signal_handlers()
        return daemon.run()
    except EtcdguardError as exc:
        log.error("%s", exc)   # setup_logging sends this to stderr (the journal under systemd)
        return exc.exit_code
    except OSError as exc:   # the last resort: the daemon turns the errors it expects into its own message
        from etcdguard.agent.base.fsutil import disk_error

        error = disk_error("file or socket error", exc)
        log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
