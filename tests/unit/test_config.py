from pathlib import Path

import pytest
from etcdguard.agent.config import load_agent_config, parse_agent_config
from etcdguard.common.base.durations import format_duration, parse_duration
from etcdguard.common.base.errors import ConfigError


def test_defaults_match_the_design():
    c = parse_agent_config({}, "agent.toml")
    assert c.backup.interval == 3600
    assert c.backup.keep == 24
    assert c.backup.dir == Path("/var/lib/etcdguard/snapshots")
    assert c.metrics.listen == "127.0.0.1:9479"
    assert c.server.listen == "tcp://0.0.0.0:7479"
    assert c.server.insecure is False
    assert c.apiserver is None
    assert c.restore.bump_revision == 1_000_000_000


def test_full_design_example(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text("""
[etcd]
runtime = "static-pod"
manifest = "/etc/kubernetes/manifests/etcd.yaml"
endpoints = ["https://127.0.0.1:2379"]
cacert = "/etc/kubernetes/pki/etcd/ca.crt"
cert = "/etc/kubernetes/pki/etcd/healthcheck-client.crt"
key = "/etc/kubernetes/pki/etcd/healthcheck-client.key"
name = "cp1"
data_dir = "/var/lib/etcd"
peer_url = "https://10.0.0.1:2380"
restore_tool = "/usr/bin/etcdutl"

[apiserver]
manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"

[backup]
dir = "/var/lib/etcdguard/snapshots"
interval = "15m"
keep = 5
max_age = "2d"

[server]
listen = "tcp://0.0.0.0:7479"
secret_key = "/etc/etcdguard/keys/agent.key_secret"
authorized_keys = "/etc/etcdguard/keys/authorized"
insecure = false

[metrics]
listen = "127.0.0.1:9479"

[state]
dir = "/var/lib/etcdguard"
""")
    c = load_agent_config(f)
    assert c.etcd.runtime == "static-pod"
    assert c.etcd.endpoints == ("https://127.0.0.1:2379",)
    assert c.etcd.key == Path("/etc/kubernetes/pki/etcd/healthcheck-client.key")
    assert c.apiserver is not None
    assert c.apiserver.manifest == Path("/etc/kubernetes/manifests/kube-apiserver.yaml")
    assert c.backup.interval == 900
    assert c.backup.keep == 5
    assert c.backup.max_age == 2 * 86400


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"etcd": {"nmae": "x"}}, "unknown key(s) in [etcd]: nmae"),
        ({"bakup": {}}, "unknown key(s) in top level: bakup"),
        ({"backup": {"keep": "3"}}, "backup.keep: expected an integer >= 1, got a string '3'"),
        ({"backup": {"keep": 0}}, "backup.keep: expected an integer >= 1"),
        ({"backup": {"keep": True}}, "backup.keep: expected an integer"),
        ({"backup": {"interval": "1 hour"}}, "backup.interval: '1 hour' is not a duration"),
        ({"backup": {"interval": "0s"}}, "backup.interval: expected a positive duration"),
        ({"etcd": {"runtime": "docker"}}, "etcd.runtime: expected one of 'static-pod', 'systemd', 'process'"),
        ({"etcd": {"data_dir": "var/lib/etcd"}}, "etcd.data_dir: expected an absolute path"),
        ({"etcd": {"endpoints": "http://x:2379"}}, "etcd.endpoints: expected a non-empty list of strings"),
        ({"etcd": {"endpoints": ["127.0.0.1:2379"]}}, "etcd.endpoints: expected URLs starting with http"),
        ({"etcd": {"cert": "/a"}}, "etcd.cert and etcd.key must be given together"),
        ({"etcd": {"runtime": "process"}}, "needs etcd.start_command"),
        ({"apiserver": {}}, "[apiserver] needs exactly one of manifest, unit or start_command"),
        ({"apiserver": {"manifest": "/a", "unit": "b"}}, "(got manifest, unit)"),
        ({"metrics": {"listen": "9479"}}, "metrics.listen: expected HOST:PORT"),
        ({"metrics": {"listen": "::1:9479"}}, "an IPv6 address needs brackets"),
        ({"metrics": {"listen": "[::1]:70000"}}, "metrics.listen: expected HOST:PORT"),
        ({"server": {"listen": "0.0.0.0:7479"}}, "server.listen: expected a ZeroMQ endpoint"),
        ({"server": {"insecure": "yes"}}, "server.insecure: expected true or false"),
        ({"etcd": 5}, "[etcd] must be a table"),
    ],
)
def test_errors_name_file_key_and_expectation(data, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_agent_config(data, "/etc/etcdguard/agent.toml")
    assert str(exc.value).startswith("/etc/etcdguard/agent.toml: ")
    assert fragment in str(exc.value)
    assert exc.value.exit_code == 2


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[etcd\nname=1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_agent_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_agent_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "h", "1x", "1h 30m", "-5s", "1h30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert format_duration(3.25) == "3.2s"
    assert format_duration(42) == "42s"
    assert format_duration(312) == "5m12s"
    assert format_duration(3 * 3600 + 300) == "3h05m"
    assert format_duration(2 * 86400 + 4 * 3600) == "2d04h"


def test_ipv6_listen_addresses_are_accepted_as_the_servers_read_them():
    c = parse_agent_config({"metrics": {"listen": "[::1]:9479"}, "server": {"listen": "tcp://[::1]:7479"}}, "a.toml")
    assert (c.metrics.listen, c.server.listen) == ("[::1]:9479", "tcp://[::1]:7479")
