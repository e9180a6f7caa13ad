"""Command lines read as Go's flag package (etcd) and pflag (kube-apiserver) read them."""

from __future__ import annotations

import pytest
from etcdguard.agent.discovery.goflags import (
    ETCD_BOOL_FLAGS,
    FlagError,
    apiserver_flags,
    etcd_flags,
    parse_flags,
)


def test_parse_flags_forms() -> None:
    argv = ["etcd", "--name=a", "--data-dir", "/d", "-initial-cluster", "a=http://x:2380",
            "--client-cert-auth", "--trusted-ca-file", "/ca", "--peer-auto-tls", "--name", "b",
            "--enable-v2=false", "--", "--key-file", "/k"]
    flags = parse_flags(argv, ETCD_BOOL_FLAGS)
    assert flags.values == {
        "name": "b", "data-dir": "/d", "initial-cluster": "a=http://x:2380", "client-cert-auth": "true",
        "trusted-ca-file": "/ca", "peer-auto-tls": "true", "enable-v2": "false",
    }
    assert flags.args == ("--key-file", "/k")  # after "--" nothing is a flag
    assert flags.positions["name"] == 11 and flags.positions["data-dir"] == 3


def test_the_next_word_is_the_value_even_when_it_starts_with_a_dash() -> None:
    assert etcd_flags(["etcd", "--data-dir", "-weird"]).values == {"data-dir": "-weird"}
    assert etcd_flags(["etcd", "--name", "--data-dir=/d"]).values == {"name": "--data-dir=/d"}
    assert etcd_flags(["etcd", "-name=x", "-data-dir", "/d"]).values == {"name": "x", "data-dir": "/d"}


def test_single_and_double_dash_are_the_same_flag_and_the_last_one_wins() -> None:
    flags = etcd_flags(["etcd", "-name", "a", "--name=b", "-name=c", "--data-dir=/1", "--data-dir", "/2"])
    assert flags.values == {"name": "c", "data-dir": "/2"}
    assert flags.positions == {"name": 4, "data-dir": 7}


def test_bool_flags_take_a_value_only_with_equals() -> None:
    flags = parse_flags(["etcd", "--client-cert-auth", "--peer-auto-tls=false", "--debug=1", "--force-new-cluster=F"],
                        ETCD_BOOL_FLAGS)
    assert flags.values == {"client-cert-auth": "true", "peer-auto-tls": "false", "debug": "true",
                            "force-new-cluster": "false"}
    # "--client-cert-auth true": the bool takes no next word, so "true" ends the flags (etcd refuses it)
    flags = parse_flags(["etcd", "--client-cert-auth", "true", "--name", "x"], ETCD_BOOL_FLAGS)
    assert flags.values == {"client-cert-auth": "true"} and flags.args == ("true", "--name", "x")
    with pytest.raises(FlagError, match=r"'true' is not a valid flag"):
        etcd_flags(["etcd", "--client-cert-auth", "true"])
    with pytest.raises(FlagError, match=r'invalid boolean value "yes" for -client-cert-auth'):
        etcd_flags(["etcd", "--client-cert-auth=yes"])


def test_double_dash_ends_the_flags() -> None:
    flags = parse_flags(["etcd", "--name", "a", "--", "--data-dir", "/d"], ETCD_BOOL_FLAGS)
    assert flags.values == {"name": "a"} and flags.args == ("--data-dir", "/d")
    assert parse_flags(["etcd", "--name", "a", "--"], ETCD_BOOL_FLAGS).args == ()
    with pytest.raises(FlagError, match=r"'--data-dir' is not a valid flag"):
        etcd_flags(["etcd", "--", "--data-dir", "/d"])


def test_a_word_that_is_not_a_flag_ends_the_flags() -> None:
    flags = parse_flags(["etcd", "--name", "a", "stray", "--data-dir", "/d"], ETCD_BOOL_FLAGS)
    assert flags.values == {"name": "a"} and flags.args == ("stray", "--data-dir", "/d")
    assert parse_flags(["etcd", "-", "--name", "a"]).args == ("-", "--name", "a")  # "-" is not a flag
    with pytest.raises(FlagError, match=r"'stray' is not a valid flag"):
        etcd_flags(["/usr/local/bin/etcd", "--name", "a", "stray"])


def test_a_wrapper_may_take_arguments_of_its_own() -> None:
    flags = etcd_flags(["/opt/run-etcd.sh", "start", "--name", "a", "--data-dir", "/d"])
    assert flags.values == {"name": "a", "data-dir": "/d"} and flags.args == ("start",)


@pytest.mark.parametrize(("argv", "message"), [
    (["etcd", "--name"], "flag needs an argument: -name"),
    (["etcd", "---name=x"], "bad flag syntax: ---name=x"),
    (["etcd", "-=x"], "bad flag syntax: -=x"),
    (["etcd", "--=x"], "bad flag syntax: --=x"),
])
def test_what_etcd_would_refuse(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as info:
        etcd_flags(argv)
    assert str(info.value) == message


def test_empty_values_and_equals_in_values() -> None:
    flags = etcd_flags(["etcd", "--name=", "--initial-cluster=a=http://x:2380,b=http://y:2380"])
    assert flags.values == {"name": "", "initial-cluster": "a=http://x:2380,b=http://y:2380"}


def test_apiserver_flags_allow_words_between_flags() -> None:
    argv = ["kube-apiserver", "--allow-privileged", "--secure-port", "7443", "stray", "--bind-address=::1",
            "--etcd-certfile", "/pki/c.crt", "-v", "2", "--profiling=false"]
    flags = apiserver_flags(argv)
    assert flags.values == {"allow-privileged": "true", "secure-port": "7443", "bind-address": "::1",
                            "etcd-certfile": "/pki/c.crt", "v": "2", "profiling": "false"}
    assert flags.args == ("stray",)


def test_apiserver_flags_of_unknown_kind_do_not_swallow_the_flags_the_agent_reads() -> None:
    argv = ["kube-apiserver", "--some-new-bool", "--secure-port", "7443", "--feature-gates", "A=true",
            "--bind-address", "-weird", "--etcd-cafile", "/ca", "--ignore-sigterm"]
    flags = apiserver_flags(argv)
    assert flags.values == {"some-new-bool": "true", "secure-port": "7443", "feature-gates": "A=true",
                            "bind-address": "-weird", "etcd-cafile": "/ca", "ignore-sigterm": "true"}
    with pytest.raises(FlagError, match="flag needs an argument: -secure-port"):
        apiserver_flags(["kube-apiserver", "--secure-port"])


def test_etcd_3_6_booleans_take_no_next_word() -> None:
    flags = etcd_flags(["etcd", "--memory-mlock", "--name", "a", "--enable-distributed-tracing",
                        "--discovery-insecure-transport", "--data-dir", "/d", "--discovery-insecure-skip-tls-verify"])
    assert flags.values == {"memory-mlock": "true", "name": "a", "enable-distributed-tracing": "true",
                            "discovery-insecure-transport": "true", "data-dir": "/d",
                            "discovery-insecure-skip-tls-verify": "true"}


def test_etcd_flags_of_unknown_kind_do_not_swallow_the_flags_the_agent_reads() -> None:
    argv = ["etcd", "--a-3.8-bool", "--name", "a", "--a-3.8-setting", "7", "--data-dir", "-weird",
            "--feature-gates=InitialCorruptCheck=true", "--watch-progress-notify-interval", "5s", "--last-one"]
    flags = etcd_flags(argv)
    assert flags.values == {"a-3.8-bool": "true", "name": "a", "a-3.8-setting": "7", "data-dir": "-weird",
                            "feature-gates": "InitialCorruptCheck=true", "watch-progress-notify-interval": "5s",
                            "last-one": "true"}
    # A known value flag still takes the next word whatever it is, and needs one.
    assert etcd_flags(["etcd", "--log-outputs", "-", "--name", "a"]).values == {"log-outputs": "-", "name": "a"}
    with pytest.raises(FlagError, match="flag needs an argument: -snapshot-count"):
        etcd_flags(["etcd", "--snapshot-count"])
