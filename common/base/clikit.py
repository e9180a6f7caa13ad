"""What etcdguard's command-line tools share: subcommand registration, `--config` and
`--verbose` accepted before or after the subcommand, and one place that turns an error
into its message and exit code.

An error is one line on stderr (``PROG: error: ...``), never a traceback: a typed
EtcdguardError exits with its code, an OSError that escaped a command (a full disk, a
file the user may not read) is read by fsutil.disk_error, naming the path (exit 1, 2 for
a permission error). With ``--json`` the same error is
also one JSON object on stdout, ``{"error": "...", "exit": N}``, so a script reading
stdout always gets JSON, usage errors (exit 2) included.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

from etcdguard.common import __version__
from etcdguard.common.base.errors import EXIT_USAGE, EtcdguardError
from etcdguard.common.base.fsutil import disk_error
from etcdguard.common.base.logsetup import setup_logging

Handler = Callable[[argparse.Namespace], int]
AddArgs = Callable[[argparse.ArgumentParser], None]


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` is among the options (before a ``--`` that ends them)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def print_json_error(message: str, code: int) -> None:
    print(json.dumps({"error": message, "exit": code}, sort_keys=True))


def table(rows: list[list[str]]) -> str:
    """Rows (the first one the header) as left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are also a JSON object on stdout under ``--json``."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            print_json_error(f"{self.prog}: {message}", EXIT_USAGE)
        super().error(message)


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

    def parser(self, json_errors: bool = False) -> argparse.ArgumentParser:
        cls = type("Parser", (_Parser,), {"json_errors": json_errors})
        parser: argparse.ArgumentParser = cls(prog=self.prog, description=self.description, epilog=self.epilog)
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
        self._common(parser, top=True)
        subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=self.default_command is None)
        for name, (help, add_args, _) in self.commands.items():
            sp = subs.add_parser(name, help=help, description=help)
            self._common(sp, top=False)
            add_args(sp)
        return parser

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = self.parser(json_errors=wants_json(argv)).parse_args(argv)
        setup_logging(args.verbose)
        name = args.command or self.default_command
        assert name is not None
        if args.command is None:
            args.json = False
        as_json = bool(getattr(args, "json", False))
        try:
            return self.commands[name][2](args)
        except EtcdguardError as exc:
            return self.fail(str(exc), exc.exit_code, as_json)
        except OSError as exc:   # the last resort: commands turn the errors they expect into their own message
            error = disk_error("file or socket error", exc)
            return self.fail(str(error), error.exit_code, as_json)
        except KeyboardInterrupt:
            print(f"{self.prog}: {self.interrupted}", file=sys.stderr)
            if as_json:
                print_json_error(self.interrupted, 130)
            return 130

    def fail(self, message: str, code: int, as_json: bool) -> int:
        """Report an error: one line on stderr, and with --json one JSON object on stdout."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if as_json:
            print_json_error(message, code)
        return code
