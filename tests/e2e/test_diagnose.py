"""etcdguardctl diagnose against real members: a certificate from a test CA that expires in 10 days.

Three members with TLS everywhere (client and peer), their certificates
valid for 10 days. The agents read etcd's certificate files from how etcd
runs and export each one's expiry; the diagnosis names every expiring file,
exits with the certificate class, and says how to renew.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import seed
from tests.helpers.net import free_port
from tests.helpers.restore_rig import RestoreRig
from tests.helpers.tls import make_tls

pytestmark = pytest.mark.slow

DAY = 86400.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_an_expiring_certificate_is_diagnosed_and_exported(etcd_factory: Any, etcd_build: Any,
                                                           tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls", days=10, cn_prefix="ten-days")
    cluster = etcd_factory.cluster(etcd_build, size=3, tls=tls)
    seed(cluster)
    ports = {m.name: free_port() for m in cluster.members}
    rig = RestoreRig(cluster, tmp_path / "rig",
                     member_sections=lambda m: {"metrics": {"enabled": True, "listen": f"127.0.0.1:{ports[m.name]}"}})
    try:
        rig.start()
        r = rig.ctl("diagnose", "--json")
        verdict = json.loads(r.stdout)
        assert r.returncode == 15 and verdict["verdict"] == "certificate-expiring", r.stdout
        problem = verdict["problems"][0]
        text = "\n".join(problem["evidence"])
        for path in (tls.server_cert, tls.ca_cert, tls.client_cert):
            assert str(path) in text, text
        assert "expires in 9." in text or "expires in 10.0 days" in text
        assert problem["command"].startswith(f"renew {tls.server_cert}") or str(tls.server_cert) in problem["command"]
        human = rig.ctl("diagnose")
        assert human.returncode == 15 and "CERTIFICATE-EXPIRING" in human.stdout and "fix:" in human.stdout

        metrics = scrape(ports["m1"])   # the db sizes come from the agent's first health check, before it is ready
        line = next(ln for ln in metrics.splitlines() if ln.startswith("etcdguard_certificate_expiry_seconds{")
                    and f'path="{tls.server_cert}"' in ln and 'kind="server"' in ln)
        assert 9 * DAY < float(line.rsplit(" ", 1)[1]) <= 10 * DAY
        assert 'kind="peer"' in metrics and 'kind="ca"' in metrics
        assert "etcdguard_certificates_unreadable 0.0" in metrics
        size = float(next(ln for ln in metrics.splitlines() if ln.startswith("etcdguard_etcd_db_size_bytes ")
                          ).split()[1])
        in_use = float(next(ln for ln in metrics.splitlines() if ln.startswith("etcdguard_etcd_db_size_in_use_bytes ")
                            ).split()[1])
        assert 0 < in_use <= size
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        rig.stop()
