# etcdguard: each target installs what it needs on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ETCD35_BIN := $(CURDIR)/.cache/etcd-3.5/usr/bin
export ETCDGUARD_ETCD35_BIN ?= $(ETCD35_BIN)
PYTEST_ARGS ?=
# Tests run on this many pytest-xdist workers, which steal work from each other so no long file is left
# for the end. Most tests wait on real etcd members and daemons (on 2 cores about 70 % of the CPU is used
# with two workers), so three workers on two cores finish sooner; 0 runs them in this process.
TEST_WORKERS ?= 3

.PHONY: all venv etcd tools lint test test-fast demo bench packages clean

all: test

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

etcd:
	bash scripts/install-etcd.sh

# promtool, systemd-analyze, lintian, rpm, rpmlint, nfpm: the packaging tests use them.
tools: venv
	bash scripts/install-packaging-tools.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

test: venv etcd tools lint
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests/unit $(PYTEST_ARGS)

demo: venv etcd
	$(PY) scripts/demo.py

# QUICK=1: a smoke run (small sizes, one repetition, under 3 minutes)
bench: venv etcd
	$(PY) tests/bench/run.py $(if $(QUICK),--quick)

# dist/etcdguard_<version>_all.deb and dist/etcdguard-<version>-1.noarch.rpm, linted.
packages:
	bash scripts/install-packaging-tools.sh
	bash packaging/build.sh

clean:
	rm -rf $(VENV) .cache dist build *.egg-info
