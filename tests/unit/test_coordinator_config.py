import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from etcdguard.common.base.errors import ConfigError
from etcdguard.common.wire import keys
from etcdguard.coordinator.config import (
    load_coordinator_config,
    load_keys,
    parse_coordinator_config,
    require_members,
)

MEMBER = {"name": "cp1", "agent": "tcp://10.0.0.1:7479", "public_key": "/etc/etcdguard/keys/cp1.key"}


def parse(data, source="coordinator.toml"):
    return parse_coordinator_config(data, source)


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.exit_code == 2
    return str(info.value)


def test_defaults_match_the_design():
    c = parse({"members": [MEMBER]})
    assert c.coordinator.state_dir == Path("/var/lib/etcdguard-coordinator")
    assert c.coordinator.control_socket == Path("/run/etcdguard/coordinator.sock")
    assert c.coordinator.secret_key == Path("/etc/etcdguard/keys/coordinator.key_secret")
    assert c.coordinator.insecure is False
    assert c.vault.dir == Path("/var/lib/etcdguard-coordinator/vault")
    assert c.vault.interval == 3600
    assert c.vault.keep == 48
    assert c.metrics.listen == "127.0.0.1:9480"
    assert [(m.name, m.agent, m.public_key) for m in c.members] == [
        ("cp1", "tcp://10.0.0.1:7479", Path("/etc/etcdguard/keys/cp1.key"))]


def test_full_design_example(tmp_path):
    f = tmp_path / "coordinator.toml"
    f.write_text("""
[coordinator]
state_dir = "/var/lib/etcdguard-coordinator"
control_socket = "/run/etcdguard/coordinator.sock"
secret_key = "/etc/etcdguard/keys/coordinator.key_secret"

[vault]
dir = "/srv/etcd-vault"
interval = "30m"
keep = 168

[metrics]
listen = "10.0.0.9:9480"

[[members]]
name = "cp1"
agent = "tcp://10.0.0.1:7479"
public_key = "/etc/etcdguard/keys/cp1.key"

[[members]]
name = "cp2"
agent = "tcp://cp2.example.org:7479"
public_key = "/etc/etcdguard/keys/cp2.key"

[[members]]
name = "cp3"
agent = "tcp://[fd00::3]:7479"
public_key = "/etc/etcdguard/keys/cp3.key"
""")
    c = load_coordinator_config(f)
    assert c.source == str(f)
    assert c.vault.dir == Path("/srv/etcd-vault")
    assert c.vault.interval == 1800
    assert c.vault.keep == 168
    assert c.metrics.listen == "10.0.0.9:9480"
    assert [m.name for m in c.members] == ["cp1", "cp2", "cp3"]
    assert c.member("cp3").agent == "tcp://[fd00::3]:7479"
    assert c.member("nope") is None


def test_packaged_example_file_parses_once_uncommented():
    # The shipped coordinator.toml shows every setting commented out ("#key = value"):
    # uncommented, it must parse, so no line in it is a typo or an unknown key.
    text = (Path(__file__).resolve().parents[2] / "packaging" / "etc" / "coordinator.toml").read_text()
    settings = [line[1:] for line in text.splitlines() if re.match(r"#(\[|\w+ = )", line)]
    c = parse(tomllib.loads("\n".join(settings)))
    assert c.members[0].name == "cp1"
    assert c.vault.keep == 48


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_coordinator_config(tmp_path / "nope.toml")


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[vault\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_coordinator_config(f)


@pytest.mark.parametrize(("data", "expected"), [
    ({"members": [MEMBER], "vault": {"intervall": "1h"}},
     r"coordinator\.toml: unknown key\(s\) in \[vault\]: intervall"),
    ({"members": [MEMBER], "coordinater": {}}, r"unknown key\(s\) in top level: coordinater"),
    ({"members": [{**MEMBER, "pubkey": "/k"}]}, r"unknown key\(s\) in \[members\[0\]\]: pubkey"),
    ({"members": [MEMBER], "vault": {"keep": 0}}, r"vault\.keep: expected an integer >= 1, got an integer 0"),
    ({"members": [MEMBER], "vault": {"interval": "soon"}}, r"vault\.interval: 'soon' is not a duration"),
    ({"members": [MEMBER], "vault": {"dir": "vault"}}, r"vault\.dir: expected an absolute path"),
    ({"members": [MEMBER], "metrics": {"listen": "9480"}}, r"metrics\.listen: expected HOST:PORT"),
    ({"members": [MEMBER], "coordinator": {"insecure": "yes"}},
     r"coordinator\.insecure: expected true or false, got a string 'yes'"),
    ({"members": [MEMBER], "coordinator": {"control_socket": "/run/" + "x" * 120}},
     r"coordinator\.control_socket: expected a path of at most 107 bytes"),
    ({"members": []}, r"members: expected \[\[members\]\] tables"),
    ({"members": {"name": "cp1"}}, r"members: expected \[\[members\]\] tables"),
    ({"members": ["cp1"]}, r"\[members\[0\]\] must be a table, got a string"),
    ({"members": [{"agent": MEMBER["agent"], "public_key": "/k"}]},
     r"members\[0\]\.name: expected the member's etcd name"),
    ({"members": [{**MEMBER, "name": "../cp1"}]}, r"members\[0\]\.name: expected a member name of letters"),
    ({"members": [{**MEMBER, "agent": "10.0.0.1:7479"}]},
     r"members\[0\]\.agent: expected tcp://HOST:PORT, e\.g\. 'tcp://10\.0\.0\.1:7479', "
     r"got a string '10\.0\.0\.1:7479'"),
    ({"members": [{**MEMBER, "agent": "tcp://10.0.0.1"}]}, r"members\[0\]\.agent: expected tcp://HOST:PORT"),
    ({"members": [{**MEMBER, "agent": "tcp://10.0.0.1:99999"}]}, r"members\[0\]\.agent: expected tcp://HOST:PORT"),
    ({"members": [{**MEMBER, "agent": "ipc:///run/a.sock"}]}, r"members\[0\]\.agent: expected tcp://HOST:PORT"),
    ({"members": [{"name": "cp1", "agent": "tcp://10.0.0.1:7479"}]},
     r"members\[0\]\.public_key: expected the path of the agent's public key file"),
    ({"members": [{**MEMBER, "public_key": "cp1.key"}]}, r"members\[0\]\.public_key: expected an absolute path"),
    ({"members": [MEMBER, {**MEMBER, "agent": "tcp://10.0.0.2:7479"}]},
     r"members\[1\]\.name: 'cp1' is already the name of members\[0\]; member names must be unique"),
    ({"members": [MEMBER, {**MEMBER, "name": "cp2"}]},
     r"members\[1\]\.agent: 'tcp://10\.0\.0\.1:7479' is already the agent of members\[0\]"),
])
def test_errors_name_file_key_and_expectation(data, expected):
    message = error_of(data)
    assert message.startswith("coordinator.toml: ")
    assert re.search(expected, message), message


def test_members_may_be_missing_from_the_file_but_the_daemon_needs_them():
    c = parse({})
    assert c.members == ()
    with pytest.raises(ConfigError, match=r"coordinator\.toml: no \[\[members\]\]: expected one"):
        require_members(c)
    require_members(parse({"members": [MEMBER]}))


def test_insecure_needs_no_keys():
    c = parse({"coordinator": {"insecure": True}, "members": [{"name": "cp1", "agent": "tcp://127.0.0.1:7479"}]})
    assert c.coordinator.insecure is True
    assert c.coordinator.secret_key is None
    assert c.members[0].public_key is None
    k = load_keys(c)
    assert (k.public, k.secret, k.members) == (None, None, {"cp1": None})


def test_metrics_can_be_disabled():
    assert parse({"members": [MEMBER], "metrics": {"enabled": False}}).metrics.listen is None


def test_load_keys_reads_every_file(tmp_path):
    kdir = tmp_path / "keys"
    keys.generate("coordinator", kdir)
    keys.generate("cp1", kdir)
    c = parse({"coordinator": {"secret_key": str(kdir / "coordinator.key_secret")},
               "members": [{**MEMBER, "public_key": str(kdir / "cp1.key")}]})
    k = load_keys(c)
    assert k.public == keys.load_public(kdir / "coordinator.key")
    assert k.members["cp1"] == keys.load_public(kdir / "cp1.key")
    assert k.secret is not None and len(k.secret) == 40


def test_load_keys_names_the_config_key_of_a_missing_file(tmp_path):
    kdir = tmp_path / "keys"
    keys.generate("coordinator", kdir)
    c = parse({"coordinator": {"secret_key": str(kdir / "coordinator.key_secret")},
               "members": [MEMBER, {"name": "cp2", "agent": "tcp://10.0.0.2:7479",
                                    "public_key": str(kdir / "cp2.key")}]})
    with pytest.raises(ConfigError) as info:
        load_keys(c)
    # cp1's default path is checked first and is missing too; either way the key is named
    assert "members[0].public_key" in str(info.value)
    assert "no such file" in str(info.value)
    c2 = parse({"coordinator": {"secret_key": str(tmp_path / "none.key_secret")}, "members": [MEMBER]})
    with pytest.raises(ConfigError, match=r"coordinator\.toml: coordinator\.secret_key .*none\.key_secret: no such"):
        load_keys(c2)


def test_continuous_defaults_and_bounds():
    from etcdguard.coordinator.config import parse_coordinator_config

    c = parse_coordinator_config({}, "c.toml").continuous
    assert (c.enabled, c.flush, c.segment_size) == (True, 5.0, 4 << 20)
    c = parse_coordinator_config({"continuous": {"enabled": False, "flush": "2s", "segment_size": "1MiB"}},
                                 "c.toml").continuous
    assert (c.enabled, c.flush, c.segment_size) == (False, 2.0, 1 << 20)
    for table, key in (({"flush": "0.1s"}, "flush"), ({"segment_size": "1KiB"}, "segment_size"),
                       ({"segment_size": "1GiB"}, "segment_size"), ({"enabled": "yes"}, "enabled")):
        with pytest.raises(ConfigError, match=rf"c\.toml: continuous\.{key}"):
            parse_coordinator_config({"continuous": table}, "c.toml")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[continuous\]: interval"):
        parse_coordinator_config({"continuous": {"interval": "5s"}}, "c.toml")
