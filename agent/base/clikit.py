"""What etcdguard's command-line tools share: subcommand registration, `--config` and
`--verbose` accepted before or after the subcommand, and one place that turns a typed
error into its message and exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.agent import __version__
from etcdguard.agent.base.errors import EtcdguardError
from etcdguard.agent.base.logsetup import setup_logging

Handler = Callable[[argparse.Namespace], int]
AddArgs = Callable[[argparse.ArgumentParser], None]


class CommandLine:
    def __init__(self, prog: str, description: str, default_config: Path, *, epilog: str = "",
                 default_command: Optional[str] = None, interrupted: str = "interrupted") -> None:
        self.prog = prog
        self.description = description
        self.default_config = default_config
        self.epilog = epilog
        self.default_command = default_command
        self.interrupted = interrupted
        self.commands: dict[str, tuple[str, AddArgs, Handler]] = {}

    def command(self, name: str, help: str, args: AddArgs) -> Callable[[Handler], Handler]:
        """Register a subcommand: its help, its arguments and its handler."""
        def wrap(fn: Handler) -> Handler:
            self.commands[name] = (help, args, fn)
            return fn
        return wrap

    def _common(self, p: argparse.ArgumentParser, top: bool) -> None:
        # On the subcommand, SUPPRESS keeps a value given before the subcommand.
        default: Any = None if top else argparse.SUPPRESS
        p.add_argument("--config", type=Path, default=default, metavar="PATH",
                       help=f"config file (default {self.default_config})")
        p.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                       help="debug logging")

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description, epilog=self.epilog)
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        self._common(parser, top=True)
        subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=self.default_command is None)
        for name, (help, add_args, _) in self.commands.items():
            sp = subs.add_parser(name, help=help, description=help)
            self._common(sp, top=False)
            add_args(sp)
        return parser

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        args = self.parser().parse_args(argv)
        setup_logging(args.verbose)
        name = args.command or self.default_command
        assert name is not None
        if args.command is None:
            args.json = False
        try:
            return self.commands[name][2](args)
        except EtcdguardError as exc:
            print(f"{self.prog}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"{self.prog}: {self.interrupted}", file=sys.stderr)
            return 130
