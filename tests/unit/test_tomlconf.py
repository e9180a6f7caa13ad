"""Config files that are not what they should be end in one ConfigError, never a traceback (issue 9 items 5,
7 and 16): bytes that are not UTF-8, directories, FIFOs, nesting deep enough to exhaust the parser, durations
that are NaN or infinite, and values far too long to quote whole."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from etcdguard.agent.config import parse_agent_config
from etcdguard.common.base.errors import ConfigError
from etcdguard.common.base.tomlconf import MAX_DURATION, Table, cut, load_toml, parse_toml
from etcdguard.coordinator.config import parse_coordinator_config

DEEP = b"a = " + b"[" * 100_000 + b"\n"


@pytest.mark.parametrize(("raw", "expected"), [
    (b'[backup]\ninterval = "1h"\n\xff\xfe = 1\n', r"not valid UTF-8 \(byte 0xff on line 3\)"),
    (DEEP, "nested too deeply"),
    (b"[backup\n", "not valid TOML"),
    (b"a = " + b"{x = " * 5000 + b"\n", "nested too deeply|not valid TOML"),
])
def test_malformed_documents_are_config_errors(raw: bytes, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        parse_toml(raw, Path("/etc/etcdguard/agent.toml"))
    assert str(info.value).startswith("/etc/etcdguard/agent.toml: ")


def test_a_directory_a_fifo_and_a_device_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)   # opening it for reading without a writer would block forever
    for path, expected in ((tmp_path, "is a directory"), (fifo, "not a regular file"),
                           (Path("/dev/zero"), "not a regular file"),
                           (tmp_path / "missing.toml", "config file not found")):
        with pytest.raises(ConfigError, match=expected):
            load_toml(path)


def test_a_readable_file_parses(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[backup]\ninterval = "15m"\n', encoding="utf-8")
    assert load_toml(f) == {"backup": {"interval": "15m"}}


@pytest.mark.parametrize("value", [
    math.nan, math.inf, -math.inf, "nan", "inf", "9" * 400 + "s", 10 ** 400, 1e300, "99999999999999999999d",
])
def test_non_finite_and_absurd_durations_are_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"backup\.interval: "):
        parse_agent_config({"backup": {"interval": value}}, "agent.toml")
    with pytest.raises(ConfigError, match=r"vault\.interval: "):
        parse_coordinator_config({"vault": {"interval": value}}, "coordinator.toml")


def test_the_longest_accepted_duration_is_ten_years() -> None:
    t = Table("agent.toml", "backup", {"a": "3650d", "b": "3651d"})
    assert t.duration("a") == MAX_DURATION
    with pytest.raises(ConfigError, match="at most 3650d"):
        t.duration("b")


def test_long_values_are_cut_in_messages() -> None:
    huge = "x" * 5_000_000
    for data in ({"backup": {"interval": huge}}, {"backup": {"dir": huge}}, {"metrics": {"listen": huge}},
                 {"backup": {huge: 1}}, {"etcd": {"endpoints": [huge]}}):
        with pytest.raises(ConfigError) as info:
            parse_agent_config(data, "agent.toml")
        assert len(str(info.value)) < 400, str(info.value)[:400]
    with pytest.raises(ConfigError, match=r"\(5000002 characters\)"):
        parse_agent_config({"backup": {"dir": huge}}, "agent.toml")


def test_cut() -> None:
    assert cut("short") == "short"
    assert cut("y" * 100, 10) == "yyyyyyyyyy... (100 characters)"
