"""The man pages describe exactly what this version's parsers accept: every command and every flag
of etcdguard-agent, etcdguardctl and etcdguard-coordinator, and nothing that is not there."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

MAN = Path(__file__).resolve().parents[2] / "packaging" / "man" / "man8"
COMMON = {"--help", "--config", "--verbose"}   # every command has them; the OPTIONS section says so
_FLAG = re.compile(r"\\-\\-((?:[a-z0-9]|\\-)+)")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from etcdguard.agent import cli as agent_cli
    from etcdguard.coordinator import daemon_cli
    from etcdguard.coordinator.ctl import cli as ctl_cli
    from etcdguard.coordinator.ctl import diagnose, drill, history, members, restore, vault_commands  # noqa: F401 - registers them

    agent_cli._load_extensions()
    return {"etcdguard-agent": agent_cli.CLI.parser(), "etcdguardctl": ctl_cli.CLI.parser(),
            "etcdguard-coordinator": daemon_cli.CLI.parser()}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def _positionals(parser: argparse.ArgumentParser) -> set[str]:
    return {str(a.metavar or a.dest) for a in parser._actions if not a.option_strings}


def _section(text: str, name: str) -> str:
    m = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH |\Z)", text, re.S | re.M)
    assert m, f"no .SH {name}"
    return m.group(1)


def _man_commands(text: str) -> dict[str, str]:
    """Command name -> the text of its .TP entries (a command may have several, as restore does)."""
    out: dict[str, str] = {}
    for block in _section(text, "COMMANDS").split(".TP\n")[1:]:
        tag = block.splitlines()[0]
        m = re.match(r'\.BR? "?([a-z][a-z-]*)', tag)
        assert m, f"cannot read the command of {tag!r}"
        out[m.group(1)] = out.get(m.group(1), "") + block
    return out


def _man_flags(text: str) -> set[str]:
    return {"--" + m.replace("\\-", "-") for m in _FLAG.findall(text)}


@pytest.mark.parametrize("tool", ["etcdguard-agent", "etcdguardctl", "etcdguard-coordinator"])
def test_man_page_matches_the_parser(tool):
    parser = _parsers()[tool]
    text = (MAN / f"{tool}.8").read_text()
    documented = _man_commands(text)
    commands = _subcommands(parser)
    assert sorted(documented) == sorted(commands), f"{tool}.8 COMMANDS differ from `{tool} --help`"
    for name, sub in commands.items():
        want = _flags(sub) - COMMON
        have = _man_flags(documented[name])
        assert want <= have, f"{tool}.8: {name} lacks {sorted(want - have)}"
        assert have <= want, f"{tool}.8: {name} names flags it does not take: {sorted(have - want)}"
        for positional in _positionals(sub):
            assert re.search(rf"\\fI{positional}\\fR|\.I {positional}\b", documented[name]), (
                f"{tool}.8: {name} does not show its argument {positional}")
    options = _man_flags(_section(text, "OPTIONS"))
    assert _flags(parser) - {"--help"} <= options, f"{tool}.8 OPTIONS lack {sorted(_flags(parser) - options)}"
    assert options <= _flags(parser) | {"--json"}, f"{tool}.8 OPTIONS name {sorted(options - _flags(parser))}"
