"""Network addresses as etcdguard reads them: URLs, ``host:port``, ZeroMQ ``tcp://`` endpoints and
etcd's ``--initial-cluster`` list of peer URLs.

One reader, so every part of the agent agrees on the same three rules:

- an IPv6 literal is written in brackets wherever a port follows it
  (``[::1]:2379``, ``https://[fd00::1]:2379``, ``tcp://[::1]:7479``), and
  ``Address.host`` holds it without them;
- a wildcard listen address means "this node" when something connects to it:
  ``0.0.0.0`` (and an empty host) becomes ``127.0.0.1``, ``::`` becomes ``::1``;
- ``host:port`` is formatted back with brackets for an IPv6 host, which is
  what gRPC targets, ``etcdctl --endpoints`` and ZeroMQ all expect.

The standard library parses URLs (``urllib.parse``) but has no single call that
accepts both a URL and a bare ``host:port`` with a bracketed IPv6 host, nor a
notion of wildcard-to-loopback, so this small layer is written here.

``--initial-cluster`` (``name=url,name=url``) is read by discovery, the
node-local restore's safety check and the wire protocol's restore step: one
reader here, so the three agree on what a malformed value is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

WILDCARD_V4 = "0.0.0.0"
WILDCARD_V6 = "::"
LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"
LOOPBACK_NAMES = frozenset({"localhost", LOOPBACK_V4, LOOPBACK_V6})


@dataclass(frozen=True)
class Address:
    """A TCP host and port, with the URL scheme it came with ("" for a bare ``host:port``)."""

    host: str        # without brackets; may be a name, an IPv4 or an IPv6 literal
    port: int
    scheme: str = ""

    @property
    def is_ipv6(self) -> bool:
        return is_ipv6_literal(self.host)

    @property
    def netloc(self) -> str:
        """``host:port``, the host bracketed when it is an IPv6 literal."""
        return format_host_port(self.host, self.port)

    @property
    def bracketed_host(self) -> str:
        """The host as it goes in front of ``:port`` (``[::1]``, ``127.0.0.1``, ``etcd.local``)."""
        return f"[{self.host}]" if self.is_ipv6 else self.host

    def connectable(self) -> Address:
        """The same address with a wildcard host replaced by this node's loopback."""
        return Address(connect_host(self.host), self.port, self.scheme)


def is_ipv6_literal(host: str) -> bool:
    """Is ``host`` (without brackets) an IPv6 address, zone index allowed (``fe80::1%eth0``)?"""
    if ":" not in host:
        return False
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def connect_host(host: str) -> str:
    """Where to connect for a listen host: wildcards become loopback, anything else stays."""
    if host in ("", WILDCARD_V4):
        return LOOPBACK_V4
    if is_ipv6_literal(host) and ipaddress.IPv6Address(host.split("%", 1)[0]).is_unspecified:
        return LOOPBACK_V6
    return host


def is_loopback(host: str) -> bool:
    """Does ``host`` name this node's loopback (127.0.0.0/8, ::1 or localhost)?"""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def format_host_port(host: str, port: int) -> str:
    """``host:port`` with an IPv6 host in brackets (``[::1]:2379``)."""
    return f"[{host}]:{port}" if is_ipv6_literal(host) else f"{host}:{port}"


def _split(netloc: str, text: str, default_port: Optional[int]) -> tuple[str, int]:
    """(host, port) of a ``host[:port]`` netloc; ValueError naming ``text`` when it is malformed."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed '[' around an IPv6 address")
        host, rest = netloc[1:end], netloc[end + 1:]
        if not is_ipv6_literal(host):
            raise ValueError(f"{text!r}: {host!r} in brackets is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: unexpected {rest!r} after the IPv6 address")
        port_text = rest[1:] if rest else None
    else:
        if netloc.count(":") > 1:
            raise ValueError(f"{text!r}: an IPv6 address needs brackets, e.g. '[::1]:2379'")
        host, sep, port_text_ = netloc.partition(":")
        port_text = port_text_ if sep else None
    if port_text is None or port_text == "":
        if port_text == "" or default_port is None:
            raise ValueError(f"{text!r} has no port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def parse_host_port(text: str, default_port: Optional[int] = None, *, require_host: bool = True) -> Address:
    """``host:port`` (``[v6]:port`` for IPv6); raises ValueError saying what is wrong.

    Without ``default_port`` the port is required. An empty host (``:9479``)
    is refused unless ``require_host`` is false.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty address")
    if "/" in value or "://" in value:
        raise ValueError(f"{text!r} is not host:port")
    host, port = _split(value, text, default_port)
    if require_host and not host:
        raise ValueError(f"{text!r} has no host")
    return Address(host, port)


def parse_url(text: str, schemes: tuple[str, ...] = ("http", "https"), default_port: Optional[int] = None) -> Address:
    """The host and port of a URL with one of ``schemes``; raises ValueError when it has none.

    Without ``default_port`` the URL must name its port. The path is ignored.
    """
    value = text.strip()
    parts = urlsplit(value)
    if parts.scheme not in schemes or not value.startswith(f"{parts.scheme}://"):
        raise ValueError(f"{text!r} is not a {' or '.join(schemes)} URL")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    host, port = _split(netloc, text, default_port)
    return Address(host, port, parts.scheme)


def parse_address(text: str, default_port: Optional[int] = None,
                  schemes: tuple[str, ...] = ("http", "https", "tcp")) -> Address:
    """A URL (one of ``schemes``) or a bare ``host:port``; an empty host is allowed (a wildcard)."""
    if "://" in text:
        return parse_url(text, schemes, default_port)
    return parse_host_port(text, default_port, require_host=False)


def connect_address(text: str, default_port: Optional[int] = None,
                    schemes: tuple[str, ...] = ("http", "https", "tcp")) -> Address:
    """Where to connect to reach what ``text`` (URL or host:port, maybe a wildcard) describes."""
    return parse_address(text, default_port, schemes).connectable()


def local_url(url: str, default_port: int) -> str:
    """``url`` with a wildcard host replaced by loopback (``http://0.0.0.0:2379`` -> ``http://127.0.0.1:2379``).

    A URL that is not http(s) is returned as it is.
    """
    try:
        address = parse_url(url, default_port=default_port)
    except ValueError:
        return url
    local = address.connectable()
    if local.host == address.host:
        return url
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme, local.netloc, parts.path, parts.query, parts.fragment))


def zmq_endpoint_is_ipv6(endpoint: str) -> bool:
    """Does a ZeroMQ ``tcp://`` endpoint name an IPv6 host (so the socket needs ``ZMQ_IPV6``)?"""
    if not endpoint.startswith("tcp://"):
        return False
    rest = endpoint[len("tcp://"):]
    # "tcp://src;dst" binds from a source address: either side may be IPv6
    return any(part.startswith("[") or is_ipv6_literal(part.rsplit(":", 1)[0]) for part in rest.split(";"))


def parse_initial_cluster(text: str) -> tuple[tuple[str, str], ...]:
    """The (member name, peer URL) pairs of an etcd ``--initial-cluster`` value, in order.

    ``name=url,name=url`` as etcd reads it: a name may appear more than once,
    because etcd reads ``m1=https://a:2380,m1=https://b:2380`` as one member
    with two peer URLs. ValueError names the entry and what is wrong with it:
    an empty entry (a doubled or trailing comma), one without ``=``, an empty
    name or URL, or a peer URL listed twice (etcd refuses to bootstrap such a
    cluster). The URLs themselves are not parsed here: what a caller accepts
    as a peer URL is its own rule.
    """
    if not text:
        raise ValueError("the initial cluster is empty (expected name=peer-URL,name=peer-URL)")
    entries: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for number, entry in enumerate(text.split(","), 1):
        name, url = _cluster_entry(entry, number)
        if url in owner:
            raise ValueError(f"peer URL {url} appears more than once (entry {number}, {name}={url}, "
                             f"and {owner[url]}={url} before it)")
        owner[url] = name
        entries.append((name, url))
    return tuple(entries)


def _cluster_entry(entry: str, number: int) -> tuple[str, str]:
    """(name, url) of entry ``number`` of an initial cluster; ValueError saying what it lacks."""
    if not entry:
        raise ValueError(f"entry {number} is empty (a doubled or trailing comma?)")
    name, sep, url = entry.partition("=")
    if not sep:
        raise ValueError(f"entry {number} {entry!r} is not name=peer-URL (no '=')")
    if not name:
        raise ValueError(f"entry {number} {entry!r} has no member name before '='")
    if not url:
        raise ValueError(f"entry {number} {entry!r} has no peer URL after '='")
    return name, url
