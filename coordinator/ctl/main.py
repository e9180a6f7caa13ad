"""etcdguardctl's entry point: every command module registers on the one CommandLine, then it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional


def main(argv: Optional[Sequence[str]] = None) -> int:
    from etcdguard.coordinator.ctl import cli, restore, vault_commands  # noqa: F401 - importing registers them

    return cli.CLI.main(argv)
