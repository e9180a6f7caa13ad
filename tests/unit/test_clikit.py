"""The shared CLI kit: errors are one line on stderr, and one JSON object on stdout under --json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from etcdguard.common.base.clikit import CommandLine, wants_json
from etcdguard.common.base.errors import UnsafeRefusal


def _cli(fn) -> CommandLine:
    cli = CommandLine("tool", "a test tool", Path("/nonexistent/tool.toml"))

    def args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true")
        p.add_argument("--n", type=int)

    cli.command("go", "do it", args)(fn)
    return cli


def _raise(exc: BaseException):
    def handler(args: argparse.Namespace) -> int:
        raise exc
    return handler


@pytest.mark.parametrize(("exc", "code", "message"), [
    (UnsafeRefusal("another operation is running"), 3, "another operation is running"),
    (PermissionError(13, "Permission denied", "/var/lib/etcdguard/snapshots"), 2,
     "file or socket error: Permission denied (/var/lib/etcdguard/snapshots); run it as root (the daemons' user) "
     "or fix the permissions"),
    (OSError(28, "No space left on device", "/var/lib/etcdguard/x.db"), 1,
     "file or socket error: No space left on device (/var/lib/etcdguard/x.db); the filesystem is full"),
])
def test_errors_are_one_line_and_one_json_object(capsys, exc, code, message):
    cli = _cli(_raise(exc))
    assert cli.main(["go"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == f"tool: error: {message}\n"
    assert cli.main(["go", "--json"]) == code
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": message, "exit": code}
    assert err == f"tool: error: {message}\n"


def test_usage_errors_under_json_are_json_too(capsys):
    cli = _cli(lambda args: 0)
    with pytest.raises(SystemExit) as info:
        cli.main(["go", "--json", "--n", "x"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["exit"] == 2 and "invalid int value: 'x'" in doc["error"]
    assert "usage:" in err
    with pytest.raises(SystemExit):
        cli.main(["go", "--n", "x"])
    out, _ = capsys.readouterr()
    assert out == ""


def test_wants_json():
    assert wants_json(["go", "--json"]) and not wants_json(["go", "--", "--json"]) and not wants_json([])
