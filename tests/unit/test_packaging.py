"""Packaging and operations assets: alert rules, dashboard, systemd units, default configs, packages.

Tools that come from Debian packages (promtool, systemd-analyze, lintian, rpm, rpmlint) and
nfpm are installed by scripts/install-packaging-tools.sh. A test that needs a missing tool
skips on a workstation and fails in CI (CI=true), where a skip would hide a broken setup.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from etcdguard.agent.config import (
    AgentConfig,
    ApiserverSettings,
    BackupSettings,
    BundleSettings,
    EtcdSettings,
    MetricsSettings,
    RestartSettings,
    RestoreSettings,
    ServerSettings,
    StateSettings,
    load_agent_config,
    parse_agent_config,
)
from etcdguard.agent.discovery.manifests import load_yaml
from etcdguard.agent.metrics import AgentMetrics
from etcdguard.common.base.errors import ConfigError

from tests.helpers.etcd import build_for, clean_env, missing_build_reason
from tests.helpers.net import free_server_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
RULES = PACKAGING / "prometheus" / "etcdguard.rules.yml"
RULES_TEST = PACKAGING / "prometheus" / "etcdguard.rules.test.yml"
DASHBOARD = PACKAGING / "grafana" / "etcdguard.json"
UNITS = {name: REPO / "systemd" / f"{name}.service" for name in ("etcdguard-agent", "etcdguard-coordinator")}
AGENT_TOML = PACKAGING / "etc" / "agent.toml"
COORDINATOR_TOML = PACKAGING / "etc" / "coordinator.toml"
METRICS_DOC = REPO / "docs" / "metrics.md"
CONFIG_DOC = REPO / "docs" / "configuration.md"
IN_CI = os.environ.get("CI") == "true"
INSTALL_HINT = "install it with: bash scripts/install-packaging-tools.sh"

# Exposure ceilings (systemd-analyze security --offline=true); measured 1.1 and 2.3 with systemd 252.
MAX_EXPOSURE = {"etcdguard-coordinator": 3.0, "etcdguard-agent": 2.5}


def missing(what: str) -> None:
    """Skip on a workstation, fail in CI: a tool the packaging checks need is absent."""
    if IN_CI:
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def tool(name: str) -> str:
    candidates = [shutil.which(name), str(Path(sys.executable).parent / name), str(REPO / ".venv" / "bin" / name)]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    missing(f"{name} not found; {INSTALL_HINT}")
    raise AssertionError("unreachable")


def run(
    argv: list[str], cwd: Optional[Path] = None, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


# -- parsing our own files (YAML with the agent's reader: duplicate keys are refused) --------------


def alert_rules(text: str) -> dict[str, dict[str, Any]]:
    """Alert name -> its rule (alert, expr, for, labels, annotations) in a rules file."""
    doc = load_yaml(text)
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"] if "alert" in r}


def metric_names(expr_text: str) -> set[str]:
    """etcdguard metric names in PromQL text; histogram series map to their family."""
    names = set(re.findall(r"\betcdguard_[a-z0-9_]+", expr_text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith("etcdguard_backup_duration") else n for n in names}


def rule_exprs(text: str) -> str:
    """All expr: values of a rules file."""
    return "\n".join(str(rule["expr"]) for rule in alert_rules(text).values())


def documented_metrics() -> dict[str, set[str]]:
    """Metric names in the tables of docs/metrics.md, by section (agent, coordinator)."""
    text = METRICS_DOC.read_text()
    agent_part, _, rest = text.partition("## Coordinator metrics")
    coordinator_part = rest.partition("## Alerts")[0]

    def names(part: str) -> set[str]:
        return set(re.findall(r"(?m)^\| `(etcdguard_[a-z0-9_]+)` \|", part))

    return {"agent": names(agent_part), "coordinator": names(coordinator_part)}


def unit_directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order; keys may repeat."""
    section = ""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def uncommented(text: str) -> str:
    """A packaged config with its commented settings ("#key = ..." and "#[section]") switched on."""
    return re.sub(r"(?m)^#(?=\[|[a-z_]+ = )", "", text)


# -- Prometheus rules --------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = tool("promtool")
    proc = run([promtool, "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = alert_rules(RULES.read_text())
    assert f"SUCCESS: {len(alerts)} rules found" in proc.stdout


def test_promtool_test_rules_pass() -> None:
    promtool = tool("promtool")
    proc = run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_issue_alerts_are_all_shipped() -> None:
    names = set(alert_rules(RULES.read_text()))
    assert {
        "EtcdguardBackupStale", "EtcdguardBackupFailing", "EtcdguardBackupSizeDropped",
        "EtcdguardAgentDown", "EtcdguardVaultStale", "EtcdguardRestoreFailed",
    } <= names
    assert "2 * etcdguard_backup_interval_seconds" in alert_rules(RULES.read_text())["EtcdguardBackupStale"]["expr"]


def rule_tests_for(tests: dict[str, Any], alert: str) -> dict[str, Any]:
    """The promtool test file with only the test groups that evaluate ``alert``."""
    groups = [g for g in tests["tests"] if any(t.get("alertname") == alert for t in g.get("alert_rule_test", []))]
    return {**tests, "tests": groups}


def with_expr(rules: dict[str, Any], alert: str, expr: Optional[str]) -> dict[str, Any]:
    """A copy of a rules document with ``alert``'s expression replaced (None: kept)."""
    copy = json.loads(json.dumps(rules))
    found = [r for g in copy["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert len(found) == 1, alert
    if expr is not None:
        found[0]["expr"] = expr
    return copy


def test_rule_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    """Each alert is tested both firing and quiet: replacing its expression with one that
    never fires, or one that always fires, must make `promtool test rules` fail."""
    promtool = tool("promtool")
    text = RULES.read_text()
    rules, tests = load_yaml(text), load_yaml(RULES_TEST.read_text())
    runs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
    for name in alert_rules(text):
        mine = rule_tests_for(tests, name)
        assert mine["tests"], f"no promtool test for {name}"
        # "none" is the control: the same subset of tests passes with the real rules.
        for mutation, replacement in (("none", None), ("never", "vector(0) > 1"), ("always", "vector(1)")):
            work = tmp_path / f"{name}-{mutation}"
            work.mkdir()
            (work / RULES.name).write_text(yaml.safe_dump(with_expr(rules, name, replacement), sort_keys=False))
            (work / "t.yml").write_text(yaml.safe_dump(mine, sort_keys=False))
            runs[(name, mutation)] = subprocess.Popen([promtool, "test", "rules", "t.yml"], cwd=work,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {key: proc.wait(timeout=120) for key, proc in runs.items()}
    failing_controls = sorted(name for (name, mutation), rc in results.items() if mutation == "none" and rc != 0)
    assert failing_controls == [], f"the tests of these alerts fail with the real rules: {failing_controls}"
    survivors = sorted(key for key, rc in results.items() if key[1] != "none" and rc == 0)
    assert survivors == [], f"alerts whose tests still pass with a broken expression: {survivors}"


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    doc = METRICS_DOC.read_text()
    headings = {h.strip().lower() for h in re.findall(r"(?m)^### (.+)$", doc)}
    for name, rule in alert_rules(RULES.read_text()).items():
        for key in ("summary", "description", "runbook_url"):
            assert rule["annotations"].get(key), f"{name} lacks {key}"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook_url"] == f"docs/metrics.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/metrics.md has no '### {name}' runbook section"
        assert f"[{name}](#{name.lower()})" in doc, f"{name} missing from the alert table in docs/metrics.md"


def test_rules_only_use_documented_metrics() -> None:
    documented = set().union(*documented_metrics().values())
    used = metric_names(rule_exprs(RULES.read_text()))
    assert used, "no etcdguard metric found in the rules"
    assert used <= documented, f"undocumented metrics in rules: {sorted(used - documented)}"


# -- metrics documentation against the agent's registry -------------------------------------------------


def test_documented_agent_metrics_match_what_the_agent_exports() -> None:
    registry = AgentMetrics().registry
    exported = {m.name for m in registry.collect()}
    # prometheus_client drops the _total suffix from counter family names.
    exported = {n + "_total" if n.endswith("failures") else n for n in exported}
    assert documented_metrics()["agent"] == exported


def test_coordinator_metrics_are_documented() -> None:
    from etcdguard.coordinator.metrics import CoordinatorMetrics

    exported = {m.name for m in CoordinatorMetrics().registry.collect()} - {"etcdguard_build_info"}
    exported = {n + "_total" if n.endswith(("failures", "gaps")) else n for n in exported}
    assert documented_metrics()["coordinator"] == exported
    # the design's names are all there
    assert {
        "etcdguard_vault_last_success_timestamp_seconds", "etcdguard_vault_age_seconds",
        "etcdguard_vault_last_size_bytes", "etcdguard_vault_failures_total",
        "etcdguard_vault_snapshots_retained", "etcdguard_vault_members_reachable",
        "etcdguard_vault_interval_seconds",
    } <= exported


# -- Grafana dashboard ----------------------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    data = json.loads(DASHBOARD.read_text())
    return [p for p in data["panels"] if p["type"] != "row"]


def test_dashboard_is_valid_grafana_json() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "etcdguard" and data["title"]
    assert isinstance(data["schemaVersion"], int)
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in data["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
    for panel in dashboard_panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    queried = {t["expr"] for p in dashboard_panels() for t in p["targets"]}
    joined = "\n".join(queried)
    for metric in ("etcdguard_backup_age_seconds", "etcdguard_backup_last_size_bytes",
                   "etcdguard_backup_failures_total", "etcdguard_restore_in_progress",
                   "etcdguard_restore_last_result", "etcdguard_vault_age_seconds"):
        assert metric in joined, f"dashboard does not show {metric}"


def test_dashboard_only_queries_documented_metrics() -> None:
    documented = set().union(*documented_metrics().values())
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    data = json.loads(DASHBOARD.read_text())
    exprs += [json.dumps(v.get("query", "")) for v in data["templating"]["list"]]
    used = metric_names("\n".join(exprs))
    assert used <= documented, f"dashboard queries undocumented metrics: {sorted(used - documented)}"


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """Every panel query is valid PromQL: promtool checks them as recording rules."""
    promtool = tool("promtool")
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, panel in enumerate(dashboard_panels()):
        for j, target in enumerate(panel["targets"]):
            expr = target["expr"].replace('instance=~"$instance"', 'instance=~".*"')
            expr = expr.replace("$__rate_interval", "5m")
            lines += [f"      - record: dashboard:panel{i}:{j}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(lines) + "\n")
    proc = run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- systemd units -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    """No complaint at all on stderr (verify exits 0 on unknown keys, with only a warning).

    The ExecStart binaries are not installed here, so the unit is checked with its
    /usr/bin path pointing at stand-ins; the man pages come from packaging/man.
    """
    analyze = tool("systemd-analyze")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for cmd in ("etcdguard-agent", "etcdguard-coordinator"):
        (bindir / cmd).write_text("#!/bin/sh\nexit 0\n")
        (bindir / cmd).chmod(0o755)
    text = UNITS[name].read_text()
    assert f"ExecStart=/usr/bin/{name} " in text
    unit = tmp_path / f"{name}.service"
    unit.write_text(text.replace("/usr/bin/etcdguard-", f"{bindir}/etcdguard-"))
    env = dict(os.environ, MANPATH=str(PACKAGING / "man"))
    proc = run([analyze, "verify", str(unit)], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_security_exposure(name: str) -> None:
    analyze = tool("systemd-analyze")
    proc = run([analyze, "security", "--offline=true", str(UNITS[name])])
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-500:] + proc.stderr
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE[name], f"{name}: exposure {exposure} > {MAX_EXPOSURE[name]}"
    assert f"**{m.group(1)}**" in (REPO / "docs" / "security.md").read_text(), (
        f"docs/security.md does not state {name}'s measured exposure {m.group(1)}")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_has_the_service_contract(name: str) -> None:
    d = unit_directives(UNITS[name])
    service = {k: v for s, k, v in d if s == "Service"}
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # config errors do not restart-loop
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+s", service["WatchdogSec"]) and re.fullmatch(r"\d+s", service["TimeoutStopSec"])
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    unit = {k: v for s, k, v in d if s == "Unit"}
    config = "agent.toml" if name == "etcdguard-agent" else "coordinator.toml"
    assert unit["ConditionPathExists"] == f"/etc/etcdguard/{config}"
    assert f"--config /etc/etcdguard/{config}" in service["ExecStart"]
    assert ("Install", "WantedBy", "multi-user.target") in d


def test_coordinator_unit_is_unprivileged() -> None:
    d = {k: v for s, k, v in unit_directives(UNITS["etcdguard-coordinator"]) if s == "Service"}
    assert d["User"] == "etcdguard" and d["Group"] == "etcdguard"
    assert d["CapabilityBoundingSet"] == ""
    assert d["RuntimeDirectory"] == "etcdguard"  # /run/etcdguard/coordinator.sock
    assert d["StateDirectory"] == "etcdguard-coordinator"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers"):
        assert d[key] == "yes", key


def test_agent_unit_can_write_only_what_it_needs() -> None:
    d = unit_directives(UNITS["etcdguard-agent"])
    service = {k: v for s, k, v in d if s == "Service"}
    assert "User" not in service  # root: it stops etcd and owns data dirs
    writable = [v for s, k, v in d if k == "ReadWritePaths"]
    assert writable == ["/var/lib", "-/etc/kubernetes/manifests"]
    caps = set(service["CapabilityBoundingSet"].split())
    assert caps == {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL"}
    # Defaults that the unit's writable paths must cover.
    for path in (BackupSettings().dir, StateSettings().dir, Path("/var/lib/etcd")):
        assert Path("/var/lib") in path.parents


def test_units_document_man_pages_that_exist() -> None:
    for unit in UNITS.values():
        for page, section in re.findall(r"man:([a-z-]+)\((\d)\)", unit.read_text()):
            assert (PACKAGING / "man" / f"man{section}" / f"{page}.{section}").is_file(), page


# -- default config files ------------------------------------------------------------------------------------


def test_packaged_agent_config_loads_as_all_defaults() -> None:
    config = load_agent_config(AGENT_TOML)
    assert dataclasses.replace(config, source="x") == AgentConfig(source="x")


def test_packaged_agent_config_comments_show_the_real_defaults() -> None:
    """Switching every commented setting on gives a valid config whose values are the defaults
    (for [etcd] and [apiserver]: what discovery finds on a kubeadm node)."""
    text = uncommented(AGENT_TOML.read_text())
    assert text != AGENT_TOML.read_text()
    config = parse_agent_config(tomllib.loads(text), str(AGENT_TOML))
    defaults = AgentConfig()
    for section in ("backup", "bundle", "restore", "server", "metrics", "state"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.etcd.runtime == "static-pod"
    assert config.etcd.manifest == Path("/etc/kubernetes/manifests/etcd.yaml")
    assert config.apiserver is not None
    assert config.apiserver.manifest == Path("/etc/kubernetes/manifests/kube-apiserver.yaml")


AGENT_SECTIONS = {
    "etcd": EtcdSettings, "apiserver": ApiserverSettings, "restart": RestartSettings, "backup": BackupSettings,
    "bundle": BundleSettings,
    "restore": RestoreSettings, "server": ServerSettings, "metrics": MetricsSettings, "state": StateSettings,
}
EXTRA_KEYS = {"metrics": {"enabled"}}  # accepted by the parser without being a field


def agent_keys() -> dict[str, set[str]]:
    return {s: {f.name for f in dataclasses.fields(cls)} | EXTRA_KEYS.get(s, set())
            for s, cls in AGENT_SECTIONS.items()}


def doc_tables(text: str) -> dict[str, set[str]]:
    """Section -> keys of the tables under "### `[section]`" headings of configuration.md."""
    out: dict[str, set[str]] = {}
    for head, body in re.findall(r"(?ms)^### `\[+([a-z0-9.]+)\]+`[^\n]*\n(.*?)(?=^##)", text + "\n##"):
        out.setdefault(head, set()).update(re.findall(r"(?m)^\| `([a-z_]+)` \|", body))
    return out


def test_configuration_doc_covers_every_agent_key() -> None:
    agent_part = CONFIG_DOC.read_text().partition("## Coordinator")[0]
    documented = doc_tables(agent_part)
    assert documented == agent_keys()


def test_documented_agent_keys_are_accepted_by_the_loader() -> None:
    """A documented key given a wrong value is rejected for its value, never as unknown."""
    for section, keys in agent_keys().items():
        for key in keys:
            table = {key: {"bad": 1}}
            with pytest.raises(ConfigError) as err:
                parse_agent_config({section: [table] if section == "restart" else table}, "t.toml")
            assert "unknown key" not in str(err.value), (section, key)
            assert key in str(err.value), (section, key, str(err.value))


def test_packaged_agent_config_mentions_every_key() -> None:
    text = AGENT_TOML.read_text()
    for section, keys in agent_keys().items():
        assert f"#[{section}]" in text or f"#[[{section}]]" in text, section
        for key in keys:
            assert re.search(rf"\b{key}\b", text), (section, key)


# Keys the coordinator adds to the design's (documented, optional, not in the packaged file).
COORDINATOR_EXTRA_KEYS = {
    "coordinator": {"insecure", "request_timeout", "control_timeout"},
    "vault": {"timeout", "compression", "compression_level"},
    "vault.s3": {"profile", "sse", "sse_kms_key_id", "ca_bundle", "part_size", "storage_class", "connect_timeout",
                 "read_timeout", "max_attempts", "abort_incomplete_after"},
    "metrics": {"enabled"},
    "restore": {"bump_revision", "safety_snapshot", "start_timeout", "fence_settle", "step_timeout",
                "prepare_timeout", "agent_down", "prestage", "prestage_rate", "warm_standby"},
    "scratch": {"etcd", "tool", "dir"},
    "continuous": {"segment_size"},
    "drill": {"enabled", "sample_keys"},
}

# The coordinator's keys, as design.md section 4 fixes them.
COORDINATOR_KEYS = {
    "coordinator": {"state_dir", "control_socket", "secret_key"},
    "vault": {"backend", "dir", "interval", "keep", "encrypt_to", "age_identity"},
    "vault.s3": {"endpoint", "region", "bucket", "prefix", "path_style", "credentials_file"},
    "metrics": {"listen"},
    "members": {"name", "agent", "public_key"},
    "continuous": {"enabled", "flush"},
    "drill": {"interval"},
}


def test_packaged_coordinator_config_has_the_design_keys() -> None:
    assert tomllib.loads(COORDINATOR_TOML.read_text()) == {}  # all commented out
    data = tomllib.loads(uncommented(COORDINATOR_TOML.read_text()))
    text = COORDINATOR_TOML.read_text()
    for key in ("encrypt_to", "age_identity"):   # shown, not switched on: their values are the operator's own
        data["vault"][key] = re.search(rf"(?m)^#\s+{key} = (.*)$", text).group(1)
    tables: dict[str, set[str]] = {}
    for k, v in data.items():
        table = v[0] if isinstance(v, list) else v
        tables[k] = {kk for kk, vv in table.items() if not isinstance(vv, dict)}
        tables.update({f"{k}.{kk}": set(vv) for kk, vv in table.items() if isinstance(vv, dict)})
    assert tables == COORDINATOR_KEYS
    assert data["coordinator"]["control_socket"] == "/run/etcdguard/coordinator.sock"
    assert data["metrics"]["listen"] == "127.0.0.1:9480"
    coordinator_part = CONFIG_DOC.read_text().partition("## Coordinator")[2]
    documented = doc_tables(coordinator_part)
    expected = {k: v | COORDINATOR_EXTRA_KEYS.get(k, set()) for k, v in COORDINATOR_KEYS.items()}
    expected.update({k: v for k, v in COORDINATOR_EXTRA_KEYS.items() if k not in COORDINATOR_KEYS})
    assert documented == expected


def test_packaged_coordinator_config_loads_with_the_coordinator_loader() -> None:
    try:
        from etcdguard.coordinator import config as coordinator_config
    except ImportError:
        pytest.skip("etcdguard.coordinator.config does not exist yet; the file is checked with tomllib above")
    loader = getattr(coordinator_config, "load_coordinator_config", None)
    if loader is None:
        pytest.skip("etcdguard.coordinator.config has no load_coordinator_config yet")
    loader(COORDINATOR_TOML)


# -- a real agent's /metrics --------------------------------------------------------------------------------


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


@pytest.mark.slow
def test_promtool_check_metrics_on_a_running_agent(etcd_factory: Any, tmp_path: Path) -> None:
    """The daemon's real /metrics passes `promtool check metrics` and exports every documented metric."""
    promtool = tool("promtool")
    build = build_for("3.4")
    if build is None:
        missing(missing_build_reason("3.4"))
    assert build is not None
    member = etcd_factory.member(build)
    member.put("/k", "v")
    pid_file = tmp_path / "etcd.pid"
    pid_file.write_text(f"{member.pid}\n")
    port = free_server_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        "[etcd]\n"
        'runtime = "process"\n'
        f"start_command = {json.dumps(member.command)}\n"
        f'pid_file = "{pid_file}"\n'
        f'endpoints = ["{member.client_url}"]\n'
        f'name = "{member.name}"\n'
        f'data_dir = "{member.data_dir}"\n'
        f'peer_url = "{member.peer_url}"\n'
        f'restore_tool = "{build.restore_tool}"\n'
        f'[backup]\ndir = "{tmp_path / "store"}"\ninterval = "1h"\n'
        "[server]\nenabled = false\n"
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "etcdguard.agent", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            try:
                body = scrape(url)
            except OSError:
                body = ""
            if re.search(r"(?m)^etcdguard_backup_last_size_bytes [1-9]", body):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no snapshot in the agent's metrics within 60 s:\n{body}\n"
                        + (tmp_path / "agent.log").read_text())
        check = run([promtool, "check", "metrics"], input=body)
        assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr
        families = set(re.findall(r"(?m)^# TYPE (\S+) ", body))
        families = {f + "_total" if f.endswith("failures") else f for f in families}
        assert documented_metrics()["agent"] <= families
        assert re.search(r"(?m)^etcdguard_etcd_up 1\.0$", body)
        assert re.search(r"(?m)^etcdguard_restore_last_result -1\.0$", body)
        assert re.search(r"(?m)^etcdguard_backup_interval_seconds 3600\.0$", body)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


# -- the packages ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tool("nfpm")
    dist = tmp_path_factory.mktemp("dist")
    proc = run(["bash", str(PACKAGING / "build.sh"), "--dist", str(dist), "--no-lint"], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    debs, rpms = sorted(dist.glob("*.deb")), sorted(dist.glob("*.rpm"))
    assert len(debs) == 1 and len(rpms) == 1, sorted(dist.iterdir())
    return {"deb": debs[0], "rpm": rpms[0]}


def project_version() -> str:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return str(data["project"]["version"])


@pytest.mark.slow
def test_deb_package(built_packages: dict[str, Path]) -> None:
    deb = built_packages["deb"]
    version = project_version()
    assert deb.name == f"etcdguard_{version}_all.deb"
    info = run(["dpkg-deb", "-f", str(deb)]).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line and not line.startswith(" "))
    assert fields["Architecture"] == "all" and fields["Version"] == version
    depends = fields["Depends"]
    assert "etcd3" not in depends and "protobuf" not in depends
    for dep in ("python3-grpcio", "python3-zmq", "python3-prometheus-client", "python3-sdnotify",
                "python3-tomli | python3 (>= 3.11)", "python3-yaml"):
        assert dep in depends
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    for path in ("./usr/bin/etcdguard-agent", "./usr/bin/etcdguardctl",
                 "./usr/lib/python3/dist-packages/etcdguard/agent/cli.py",
                 "./lib/systemd/system/etcdguard-agent.service", "./etc/etcdguard/agent.toml",
                 "./usr/share/etcdguard/prometheus/etcdguard.rules.yml",
                 "./usr/share/man/man8/etcdguard-agent.8.gz", "./usr/share/doc/etcdguard/changelog.gz"):
        assert path in listing, path
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"./usr/share/doc/etcdguard/{doc.name}" in listing, f"the .deb lacks docs/{doc.name}"
    for page in sorted((PACKAGING / "man" / "man8").glob("*.8")):
        assert f"./usr/share/man/man8/{page.name}.gz" in listing, page.name
    assert "__pycache__" not in listing and ".pyc" not in listing
    assert "./usr/lib/python3/dist-packages/etcdguard/__init__.py" not in listing  # namespace package
    conffiles = run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout.split()
    assert conffiles == ["/etc/etcdguard/agent.toml", "/etc/etcdguard/coordinator.toml"]


@pytest.mark.slow
def test_lintian_reports_no_errors_or_warnings(built_packages: dict[str, Path]) -> None:
    lintian = tool("lintian")
    proc = run([lintian, "--pedantic", str(built_packages["deb"])], timeout=300)
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EWX]: ", line)]
    assert tags == [], proc.stdout


@pytest.mark.slow
def test_rpm_package(built_packages: dict[str, Path], tmp_path: Path) -> None:
    rpm_cmd = tool("rpm")
    rpm = built_packages["rpm"]
    assert rpm.name == f"etcdguard-{project_version()}-1.noarch.rpm"
    files = run([rpm_cmd, "-qpl", str(rpm)]).stdout.split()
    for path in ("/usr/bin/etcdguard-agent", "/usr/lib/systemd/system/etcdguard-coordinator.service",
                 "/usr/share/etcdguard/python/etcdguard/agent/cli.py",
                 "/usr/share/etcdguard/python/sdnotify/__init__.py", "/usr/share/etcdguard/python/tomli/__init__.py"):
        assert path in files, path
    assert not any("__pycache__" in f for f in files)
    vendored = {f.split("/")[5] for f in files if f.startswith("/usr/share/etcdguard/python/") and f.count("/") > 5}
    assert {v for v in vendored if not v.endswith(".dist-info")} == {"etcdguard", "sdnotify", "tomli"}, vendored
    documented = run([rpm_cmd, "-qpd", str(rpm)]).stdout.split()   # %doc: every file of docs/, the man pages
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"/usr/share/doc/etcdguard/{doc.name}" in documented, f"the .rpm lacks docs/{doc.name} as %doc"
    for page in sorted((PACKAGING / "man" / "man8").glob("*.8")):
        assert f"/usr/share/man/man8/{page.name}.gz" in documented, page.name
    config = run([rpm_cmd, "-qp", "--configfiles", str(rpm)]).stdout.split()
    assert config == ["/etc/etcdguard/agent.toml", "/etc/etcdguard/coordinator.toml"]
    scripts = run([rpm_cmd, "-qp", "--scripts", str(rpm)]).stdout
    assert "useradd -r -g etcdguard" in scripts and "systemctl daemon-reload" in scripts
    requires = run([rpm_cmd, "-qp", "--requires", str(rpm)]).stdout
    assert "python3dist(pyzmq)" in requires and "python3dist(grpcio)" in requires
    for gone in ("etcd3", "protobuf", "six", "tenacity"):
        assert f"python3dist({gone})" not in requires, requires
    assert "python3dist(pyyaml)" in requires   # python3-pyyaml provides it (Fedora, EL9); not vendored

    # Install into a scratch root and run the commands from there with this machine's Python.
    root = tmp_path / "root"
    proc = run([rpm_cmd, "-i", "--nodeps", "--noscripts", "--force-debian", "--root", str(root), str(rpm)])
    assert proc.returncode == 0, proc.stderr
    private = root / "usr/share/etcdguard/python"
    env = clean_env({"PYTHONPATH": str(private)})
    proc = run([sys.executable, str(root / "usr/bin/etcdguard-agent"), "--version"], env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"etcdguard-agent {project_version()}", proc.stderr
    where = run([sys.executable, "-c", "import etcdguard.agent.cli, sdnotify, tomli\n"
                 "for m in (etcdguard.agent.cli, sdnotify, tomli): print(m.__file__)"], env=env)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(private)) for line in where.stdout.split()), where.stdout


@pytest.mark.slow
def test_rpmlint_reports_no_errors(built_packages: dict[str, Path]) -> None:
    rpmlint = tool("rpmlint")
    proc = run([rpmlint, "--config", str(PACKAGING / "rpmlint.toml"), str(built_packages["rpm"])])
    assert re.search(r"\b0 errors\b", proc.stdout), proc.stdout
    assert not re.search(r"(?m)^\S+: E: ", proc.stdout), proc.stdout
