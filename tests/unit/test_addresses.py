"""The one address reader: URLs, host:port, bracketed IPv6, wildcard listen addresses, --initial-cluster."""

from __future__ import annotations

import pytest
from etcdguard.common.base.addresses import (
    Address,
    connect_address,
    connect_host,
    format_host_port,
    is_ipv6_literal,
    is_loopback,
    local_url,
    parse_host_port,
    parse_initial_cluster,
    parse_url,
    zmq_endpoint_is_ipv6,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9479", Address("127.0.0.1", 9479)),
    ("[::1]:9479", Address("::1", 9479)),
    ("[::]:9479", Address("::", 9479)),
    ("[fe80::1%eth0]:9479", Address("fe80::1%eth0", 9479)),
    ("localhost:0", Address("localhost", 0)),
    (" etcd.local:2379 ", Address("etcd.local", 2379)),
])
def test_parse_host_port(text: str, expected: Address) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("9479", "has no port"),
    ("127.0.0.1:", "has no port"),
    (":9479", "has no host"),
    ("::1:9479", "needs brackets"),
    ("[::1]9479", "unexpected '9479'"),
    ("[::1", "unclosed"),
    ("[not-v6]:1", "is not an IPv6 address"),
    ("127.0.0.1:65536", "port '65536'"),
    ("127.0.0.1:http", "port 'http'"),
    ("http://127.0.0.1:1", "is not host:port"),
    ("", "empty"),
])
def test_parse_host_port_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_host_port(text)


def test_parse_url() -> None:
    assert parse_url("https://[::1]:2379") == Address("::1", 2379, "https")
    assert parse_url("http://10.0.0.1:12379/health?x=1") == Address("10.0.0.1", 12379, "http")
    assert parse_url("https://etcd.local", default_port=2379) == Address("etcd.local", 2379, "https")
    assert parse_url("http://user@[fd00::2]:2379") == Address("fd00::2", 2379, "http")
    assert parse_url("tcp://[::1]:7479", schemes=("tcp",)) == Address("::1", 7479, "tcp")
    for bad in ("unix:///run/etcd.sock", "https://etcd.local", "http://::1:2379", "127.0.0.1:2379", "http:/x:1"):
        with pytest.raises(ValueError):
            parse_url(bad)


@pytest.mark.parametrize(("host", "local"), [
    ("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "::1"), ("0:0::0", "::1"),
    ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("fd00::5", "fd00::5"), ("etcd.local", "etcd.local"),
])
def test_wildcards_map_to_the_loopback_of_their_family(host: str, local: str) -> None:
    assert connect_host(host) == local


def test_connect_address_for_urls_and_host_port() -> None:
    assert connect_address("http://0.0.0.0:2379").netloc == "127.0.0.1:2379"
    assert connect_address("https://[::]:2379").netloc == "[::1]:2379"
    assert connect_address("[::]:6443").netloc == "[::1]:6443"
    assert connect_address("http://:2379") == Address("127.0.0.1", 2379, "http")  # etcd: every address
    assert connect_address("https://etcd.local", 2379).netloc == "etcd.local:2379"


def test_formatting_brackets_ipv6_only() -> None:
    assert format_host_port("::1", 2379) == "[::1]:2379"
    assert format_host_port("127.0.0.1", 2379) == "127.0.0.1:2379"
    assert format_host_port("etcd.local", 2379) == "etcd.local:2379"
    assert Address("fd00::1", 1).bracketed_host == "[fd00::1]"
    assert Address("10.0.0.1", 1).bracketed_host == "10.0.0.1"
    assert is_ipv6_literal("fe80::1%eth0") and not is_ipv6_literal("10.0.0.1") and not is_ipv6_literal("a:b")


def test_local_url_keeps_everything_but_a_wildcard_host() -> None:
    assert local_url("http://0.0.0.0:2379", 2379) == "http://127.0.0.1:2379"
    assert local_url("https://[::]:2379/x", 2379) == "https://[::1]:2379/x"
    assert local_url("http://0.0.0.0", 2379) == "http://127.0.0.1:2379"
    assert local_url("https://10.0.0.1:2379", 2379) == "https://10.0.0.1:2379"
    assert local_url("unix://localhost:0", 2379) == "unix://localhost:0"


def test_loopback_and_zmq_ipv6() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "fd00::1", "etcd.local", "0.0.0.0"))
    assert zmq_endpoint_is_ipv6("tcp://[::1]:7479") and zmq_endpoint_is_ipv6("tcp://[fd00::1]:*")
    assert not zmq_endpoint_is_ipv6("tcp://0.0.0.0:7479") and not zmq_endpoint_is_ipv6("tcp://*:7479")
    assert not zmq_endpoint_is_ipv6("ipc:///run/etcdguard/agent.sock")


def test_parse_initial_cluster_keeps_order_and_several_urls_of_one_member() -> None:
    assert parse_initial_cluster("m1=https://10.0.0.1:2380") == (("m1", "https://10.0.0.1:2380"),)
    assert parse_initial_cluster("b=http://[fd00::2]:2380,a=http://a:2380,b=http://b.example:2380") == (
        ("b", "http://[fd00::2]:2380"), ("a", "http://a:2380"), ("b", "http://b.example:2380"))


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("m1=http://a:2380,", "entry 2 is empty"),
    ("m1=http://a:2380,,m2=http://b:2380", "entry 2 is empty"),
    ("m1 http://a:2380", "entry 1 'm1 http://a:2380' is not name=peer-URL"),
    ("m1=http://a:2380,=http://b:2380", "entry 2 '=http://b:2380' has no member name"),
    ("m1=", "entry 1 'm1=' has no peer URL"),
    ("m1=http://a:2380,m2=http://a:2380", "peer URL http://a:2380 appears more than once (entry 2, "
                                          "m2=http://a:2380, and m1=http://a:2380 before it)"),
    ("m1=http://a:2380,m1=http://a:2380", "peer URL http://a:2380 appears more than once"),
])
def test_parse_initial_cluster_says_which_entry_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_initial_cluster(text)
    assert why in str(info.value)
