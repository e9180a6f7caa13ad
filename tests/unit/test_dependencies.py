"""What pyproject, the .deb and the .rpm declare is what etcdguard's code imports, and nothing more.

The imports are read from the sources (ast, every module of common/, agent/ and
coordinator/, including imports inside functions), so a library added to the code
but not to the packages, or left in the packages after the code stopped using it
(python-etcd3 and protobuf were), fails here rather than on an installed node.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("common", "agent", "coordinator")

# import name -> the distribution pyproject declares for it
DISTRIBUTION = {
    "grpc": "grpcio",
    "zmq": "pyzmq",
    "prometheus_client": "prometheus-client",
    "sdnotify": "sdnotify",
    "tomli": "tomli",
    "boto3": "boto3",
    "botocore": "boto3",    # boto3's own dependency; its exceptions are boto3's error API
    "yaml": "pyyaml",
    "cryptography": "cryptography",
    "zstandard": "zstandard",
}
# distribution -> what the .deb depends on for it
DEBIAN = {
    "grpcio": "python3-grpcio",
    "pyzmq": "python3-zmq",
    "prometheus-client": "python3-prometheus-client",
    "sdnotify": "python3-sdnotify",
    "tomli": "python3-tomli | python3 (>= 3.11)",
    "boto3": "python3-boto3",
    "pyyaml": "python3-yaml",
    "cryptography": "python3-cryptography",
    "zstandard": "python3-zstandard",
}
NOT_PYTHON_DEBIAN = {"python3", "age", "adduser"}
NOT_PYTHON_RPM = {"python3 >= 3.9", "age", "shadow-utils"}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of every absolute import outside the standard library: name -> files."""
    found: dict[str, set[str]] = {}
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    root = name.split(".")[0]
                    if root != "etcdguard" and root not in sys.stdlib_module_names:
                        found.setdefault(root, set()).add(str(path.relative_to(REPO)))
    return found


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def nfpm_depends(packager: str) -> list[str]:
    config = yaml.safe_load((REPO / "packaging" / "nfpm.yaml").read_text())
    return list(config["overrides"][packager]["depends"])


@pytest.fixture(scope="module")
def imported() -> set[str]:
    found = third_party_imports()
    unknown = {name: sorted(files) for name, files in found.items() if name not in DISTRIBUTION}
    assert not unknown, f"imports of libraries this test does not know (add them to DISTRIBUTION): {unknown}"
    return {DISTRIBUTION[name] for name in found}


def test_pyproject_declares_exactly_what_the_code_imports(imported: set[str]) -> None:
    declared = {requirement_name(r) for r in pyproject()["project"]["dependencies"]}
    assert declared == imported


def test_the_test_client_libraries_are_only_test_dependencies() -> None:
    found = third_party_imports()
    assert "etcd3" not in found and "google" not in found
    test_extra = {requirement_name(r) for r in pyproject()["project"]["optional-dependencies"]["test"]}
    assert {"etcd3", "protobuf"} <= test_extra


def test_the_deb_depends_on_exactly_the_imported_libraries(imported: set[str]) -> None:
    python = [d for d in nfpm_depends("deb") if d not in NOT_PYTHON_DEBIAN]
    assert sorted(python) == sorted(DEBIAN[d] for d in imported)


def test_the_rpm_requires_or_vendors_exactly_the_imported_libraries(imported: set[str]) -> None:
    required = set()
    for dep in nfpm_depends("rpm"):
        match = re.fullmatch(r"python3dist\(([^)]+)\)", dep)
        assert match or dep in NOT_PYTHON_RPM, dep
        if match:
            required.add(match.group(1))
    build = (REPO / "packaging" / "build.sh").read_text()
    vendor_line = re.search(r"(?m)^VENDOR_RPM=\((.*)\)$", build)
    assert vendor_line is not None
    vendored = {requirement_name(v) for v in re.findall(r'"([^"]+)"', vendor_line.group(1))}
    assert not required & vendored
    assert required | vendored == imported
