"""What a failed etcd tool said, reduced to the line that gives its reason (issue 9 item 16), and temp names
written beside other temps (one prefix, so the sweep still finds them and names stay readable)."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcdguard.common.base import fsutil
from etcdguard.common.snapshot.tools import REASON_CHARS, failure_reason

PANIC = """panic: assertion failed: Page expected to be: 2, but self identifies as 18446744073709551615

goroutine 71 [running]:
go.etcd.io/bbolt._assert(...)
\tgo.etcd.io/bbolt/db.go:1387
panic: freepages: failed to get all reachable pages (page -1: out of bounds: 222)

goroutine 107 [running]:
go.etcd.io/bbolt.(*DB).freepages.func2()
\tgo.etcd.io/bbolt/db.go:1056 +0x99
"""


@pytest.mark.parametrize(("output", "reason"), [
    (PANIC, "panic: assertion failed: Page expected to be: 2, but self identifies as 18446744073709551615"),
    ("Deprecated: use etcdutl\nError: invalid database\n", "Error: invalid database"),
    ('{"level":"info","msg":"opening"}\n{"level":"fatal","msg":"failed to restore","error":"file exists"}\n',
     "failed to restore file exists"),
    ("something odd\nthe last word\n", "the last word"),
    ("", "no output"),
])
def test_failure_reason(output: str, reason: str) -> None:
    assert failure_reason(output) == reason


def test_a_long_reason_is_cut() -> None:
    assert len(failure_reason("Error: " + "x" * 10_000)) == REASON_CHARS + 3


def test_a_temp_beside_a_temp_has_one_prefix(tmp_path: Path) -> None:
    outer = fsutil.temp_path(tmp_path)
    inner = fsutil.temp_path(tmp_path, outer.name)
    assert inner.name.count(fsutil.TEMP_PREFIX) == 1 and inner.name.startswith(fsutil.TEMP_PREFIX)
    inner.write_bytes(b"partial")
    assert fsutil.remove_stale_temps(tmp_path) == [inner]
