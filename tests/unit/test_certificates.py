"""Which certificate files the agent watches, when each expires, and the metrics it exports of them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from etcdguard.agent import certs
from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import ClientTLS, LocalMember
from etcdguard.agent.metrics import AgentMetrics

from tests.helpers.tls import make_tls


def test_a_ten_day_certificate_and_a_ca_bundle_read_by_their_soonest_expiry(tmp_path: Path) -> None:
    short = make_tls(tmp_path / "short", days=10)
    long = make_tls(tmp_path / "long", days=400)
    info = certs.read_certificate(short.server_cert, ("server",))
    assert info.error is None and info.kinds == ("server",) and "CN=etcdguard-test-server" in info.subject
    assert 9 * 86400 < (info.not_after_unix or 0) - time.time() <= 10 * 86400
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(long.ca_cert.read_bytes() + short.ca_cert.read_bytes())
    assert certs.read_certificate(bundle, ("ca",)).not_after_unix == certs.read_certificate(
        short.ca_cert, ("ca",)).not_after_unix
    (tmp_path / "junk.crt").write_text("not a certificate")
    assert "no PEM certificate" in (certs.read_certificate(tmp_path / "junk.crt", ("ca",)).error or "")
    assert "cannot read it" in (certs.read_certificate(tmp_path / "gone.crt", ("ca",)).error or "")


def test_the_files_etcd_uses_each_once_with_every_use(tmp_path: Path) -> None:
    t = make_tls(tmp_path / "tls", days=10)
    member = LocalMember(name="m1", data_dir=tmp_path / "data", endpoints=("https://127.0.0.1:2379",),
                         tls=t.client_tls(), peer_tls=ClientTLS(cacert=t.ca_cert, cert=t.server_cert, key=t.server_key),
                         server_tls=ClientTLS(cacert=t.ca_cert, cert=t.server_cert, key=t.server_key))
    files = dict(certs.certificate_files(AgentConfig(), member))
    assert files == {t.server_cert: ("server", "peer"), t.ca_cert: ("ca",), t.client_cert: ("client",)}


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    a, b = make_tls(tmp_path / "a", days=10), make_tls(tmp_path / "b", days=300)
    path = tmp_path / "server.crt"
    path.write_bytes(a.server_cert.read_bytes())
    cache = certs.CertificateCache()
    first = cache.read([(path, ("server",))])[0]
    path.write_bytes(b.server_cert.read_bytes())
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    second = cache.read()[0]
    assert (second.not_after_unix or 0) > (first.not_after_unix or 0) + 200 * 86400


def test_expiry_seconds_per_file_and_use_at_scrape_time(tmp_path: Path) -> None:
    t = make_tls(tmp_path / "tls", days=10)
    metrics = AgentMetrics(wall=lambda: 1000.0)
    metrics.certificates.source = lambda: (certs.read_certificate(t.server_cert, ("server", "peer")),
                                           certs.read_certificate(tmp_path / "gone", ("ca",)))
    text = metrics.render().decode()
    not_after = certs.read_certificate(t.server_cert, ()).not_after_unix or 0
    for kind in ("server", "peer"):
        head = f'etcdguard_certificate_expiry_seconds{{kind="{kind}",path="{t.server_cert}"}} '
        line = next(ln for ln in text.splitlines() if ln.startswith(head))
        assert float(line[len(head):]) == round(not_after - 1000.0, 3)
    assert "etcdguard_certificates_unreadable 1.0" in text
    metrics.record_db(100, 40)
    assert "etcdguard_etcd_db_size_bytes 100.0" in metrics.render().decode()
