"""etcdguardctl's entry point: every command module registers on the one CommandLine, then it runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional


def main(argv: Optional[Sequence[str]] = None) -> int:
    from etcdguard.common.base.fsutil import disk_error
    from etcdguard.coordinator.ctl import cli, diagnose, drill, history, members, restore, vault_commands  # noqa: F401 - importing registers them

    try:
        return cli.CLI.main(argv)
    except OSError as exc:   # the last resort: each command turns the errors it expects into its own message
        error = disk_error("file or socket error", exc)
        print(f"{cli.PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
