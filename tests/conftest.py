"""Shared fixtures: real etcd builds, members and clusters on 127.0.0.1, TLS material.

A missing etcd build skips the tests that need it on a workstation and fails
them in CI (CI=true), where a silently skipped test would hide a broken setup.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.helpers.etcd import (
    BUILD_LABELS,
    INSTALL_HINT,
    EtcdBuild,
    EtcdCluster,
    EtcdMember,
    build_for,
    kill_leftovers,
    missing_build_reason,
)
from tests.helpers.kubelet import TestKubelet
from tests.helpers.tls import TLSMaterial, make_tls

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Remember the call phase's outcome, so teardowns can attach etcd logs to a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_CALL_REPORT] = report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "etcd35_build" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.etcd35)


def _require_build(label: str, need_bump_revision: bool = False) -> EtcdBuild:
    build = build_for(label)
    problem: Optional[str] = None
    if build is None:
        problem = missing_build_reason(label)
    elif need_bump_revision and not build.supports_bump_revision:
        problem = (f"etcd {build.version} at {build.bin_dir} lacks etcdutl --bump-revision "
                   f"(needs >= 3.5.10 with etcdutl); {INSTALL_HINT}")
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    assert build is not None
    return build


@pytest.fixture(params=BUILD_LABELS, ids=[f"etcd{label}" for label in BUILD_LABELS])
def etcd_build(request: pytest.FixtureRequest) -> EtcdBuild:
    """Each etcd build in turn (3.4 from PATH, 3.5 from $ETCDGUARD_ETCD35_BIN or .cache)."""
    return _require_build(str(request.param))


@pytest.fixture
def etcd35_build() -> EtcdBuild:
    """The etcd 3.5 build (etcdutl, --bump-revision), for tests that need it."""
    return _require_build("3.5", need_bump_revision=True)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_etcd() -> Iterator[None]:
    """Kill every etcd the session started, also when the run is ended with SIGTERM."""
    previous: Any = signal.getsignal(signal.SIGTERM)
    installed = False
    if previous == signal.SIG_DFL:

        def on_term(signum: int, frame: Any) -> None:
            kill_leftovers()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        installed = True
    try:
        yield
    finally:
        leaked = kill_leftovers()
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if leaked:
            print(f"\netcd test harness: killed leftover etcd members {leaked}", file=sys.stderr)


@pytest.fixture(scope="session")
def _tls_template(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_material(_tls_template: TLSMaterial, tmp_path: Path) -> TLSMaterial:
    """A CA, server and client certificate (0600) in this test's own directory."""
    target = tmp_path / "tls"
    target.mkdir(mode=0o700)
    changes: dict[str, Path] = {"dir": target}
    for f in dataclasses.fields(_tls_template):
        if f.name != "dir":
            src = getattr(_tls_template, f.name)
            shutil.copy2(src, target / src.name)
            changes[f.name] = target / src.name
    return dataclasses.replace(_tls_template, **changes)


class EtcdFactory:
    """Creates members and clusters that are killed when the test ends."""

    def __init__(self, request: pytest.FixtureRequest, base: Path) -> None:
        self._request = request
        self._base = base
        self._members: list[EtcdMember] = []
        self._count = 0

    def _dir(self, kind: str) -> Path:
        self._count += 1
        return self._base / f"{kind}{self._count}"

    def member(self, build: EtcdBuild, tls: Optional[TLSMaterial] = None, start: bool = True,
               **kwargs: Any) -> EtcdMember:
        member = EtcdMember(build, self._dir("m"), tls=tls, **kwargs)
        self._members.append(member)
        if start:
            member.launch()
        return member

    def cluster(self, build: EtcdBuild, size: int = 3, tls: Optional[TLSMaterial] = None,
                start: bool = True, **kwargs: Any) -> EtcdCluster:
        cluster = EtcdCluster(build, self._dir("c"), size=size, tls=tls, **kwargs)
        self._members.extend(cluster.members)
        if start:
            cluster.launch()
        return cluster

    def teardown(self) -> None:
        report = self._request.node.stash.get(_CALL_REPORT, None)
        if report is not None and report.failed:
            for member in self._members:
                print(f"\n[{member.name} {member.client_url}]\n{member.log_tail(60)}")
        errors = []
        for member in self._members:
            try:
                member.stop(kill=True)
            except (OSError, RuntimeError) as exc:  # stop the others anyway; kill_leftovers retries at session end
                errors.append(f"{member.name}: {exc!r}")
        assert not errors, f"could not stop etcd members: {errors}"


@pytest.fixture
def etcd_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EtcdFactory]:
    """Make more members/clusters (any build, TLS or not); all are killed at teardown."""
    factory = EtcdFactory(request, tmp_path / "etcd")
    try:
        yield factory
    finally:
        factory.teardown()


@pytest.fixture
def etcd_member(etcd_factory: EtcdFactory, etcd_build: EtcdBuild) -> EtcdMember:
    """One plain-HTTP member of the parametrized build, started and healthy."""
    return etcd_factory.member(etcd_build)


@pytest.fixture
def etcd_member_tls(etcd_factory: EtcdFactory, etcd_build: EtcdBuild, tls_material: TLSMaterial) -> EtcdMember:
    """One member with TLS on client and peer ports and client certificates required."""
    return etcd_factory.member(etcd_build, tls=tls_material)


@pytest.fixture
def etcd_cluster3(etcd_factory: EtcdFactory, etcd_build: EtcdBuild) -> EtcdCluster:
    """Three plain-HTTP members of the parametrized build, healthy with one leader."""
    return etcd_factory.cluster(etcd_build, size=3)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[TestKubelet]:
    """The test kubelet on a temp manifests dir (static-pod runtime tests); stopped at teardown."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    k = TestKubelet(manifests, tmp_path / "kubelet-logs").start()
    yield k
    k.stop_all()
    assert k.errors == []
