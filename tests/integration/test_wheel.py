"""The wheel built from the working tree installs into an empty venv, and everything in it runs there.

The steps are docs/install.md's "From source" block, read from the doc and run
one by one with its paths replaced by temporary ones, so the doc and this test
cannot drift apart: an empty venv, ``pip wheel --no-deps`` of the source tree
with that venv's pip, ``pip install`` of the wheel (its dependencies from the
index), the three commands' ``--help``. Then every module of the source tree
must be in the venv and import there, so a package left out of the wheel (a
missing ``__init__.py``, a hand-kept package list) fails here and not on a node.

The source tree is a copy of the working tree's files as git would ship them
(tracked and new, not ignored; deleted ones left out), i.e. the doc's clean
checkout: setuptools builds in the source's ``build/``, and a ``build/lib``
left by an earlier build carries files into the wheel that the tree no longer
has.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.etcd import clean_env

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("common", "agent", "coordinator")
COMMANDS = ("etcdguard-agent", "etcdguard-coordinator", "etcdguardctl")
DOC_SOURCE, DOC_VENV, DOC_WHEELS = "/path/to/etcdguard", "/opt/etcdguard", "/tmp/etcdguard-wheel"
MAIN_PACKAGES = {"etcdguard.agent": "etcdguard-agent", "etcdguard.coordinator.ctl": "etcdguardctl"}

IMPORT_ALL = r"""
import importlib, json, pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
modules, failures = [], {}
for path in sorted((site / "etcdguard").rglob("*.py")):
    parts = path.relative_to(site).with_suffix("").parts
    if parts[-1] == "__main__":   # runs its command when imported; checked with -m PACKAGE --help
        continue
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    modules.append(name)
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"site": str(site), "modules": modules, "failures": failures}))
"""


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"):
        env.pop(name, None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def source_modules() -> set[str]:
    """Every module the source tree holds, by the name it has when installed."""
    names = set()
    for top in SOURCES:
        for path in (REPO / top).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "__pycache__" in parts or parts[-1] == "__main__":
                continue
            names.add(".".join(("etcdguard", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def copy_source_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():   # a file deleted in the working tree is still in the index
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def doc_steps() -> list[str]:
    """The commands of the first shell block under docs/install.md's "From source"."""
    text = (REPO / "docs" / "install.md").read_text()
    section = text.split("\n## From source\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_doc_builds_a_wheel_into_an_empty_venv_and_runs_each_command() -> None:
    version = re.search(r'(?m)^version = "([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert version is not None
    assert doc_steps() == [
        f"cd {DOC_SOURCE}",
        f"python3 -m venv {DOC_VENV}",
        f"{DOC_VENV}/bin/pip wheel --no-deps --wheel-dir {DOC_WHEELS} .",
        f"{DOC_VENV}/bin/pip install {DOC_WHEELS}/etcdguard-{version.group(1)}-py3-none-any.whl",
        *(f"{DOC_VENV}/bin/{command} --help" for command in COMMANDS),
    ]


@pytest.mark.slow
def test_the_wheel_installs_into_an_empty_venv_and_every_module_imports(tmp_path: Path) -> None:
    src, wheels, venv = tmp_path / "etcdguard", tmp_path / "wheels", tmp_path / "venv"
    copy_source_tree(src)
    cwd = tmp_path
    for step in doc_steps():
        command = step.replace(DOC_SOURCE, str(src)).replace(DOC_VENV, str(venv)).replace(DOC_WHEELS, str(wheels))
        if command.startswith("cd "):
            cwd = Path(command[3:])
            continue
        proc = run(["bash", "-c", command], cwd=cwd)
        assert proc.returncode == 0, f"{step}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        if command.endswith(" --help"):
            assert proc.stdout.startswith(f"usage: {Path(command.split()[0]).name} "), proc.stdout[:300]
        elif " -m venv " in command:   # empty: nothing but pip (and setuptools on older Pythons)
            listed = run([str(venv / "bin" / "pip"), "list", "--format", "json"], cwd=cwd)
            assert {p["name"] for p in json.loads(listed.stdout)} <= {"pip", "setuptools"}, listed.stdout

    python = str(venv / "bin" / "python")
    for package, command in MAIN_PACKAGES.items():
        proc = run([python, "-m", package, "--help"], cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, f"-m {package} --help: {proc.stderr[-2000:]}"
        assert proc.stdout.startswith(f"usage: {command} "), proc.stdout[:300]

    proc = run([python, "-c", IMPORT_ALL], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert Path(report["site"]).is_relative_to(venv)
    assert report["failures"] == {}
    assert set(report["modules"]) == source_modules()
