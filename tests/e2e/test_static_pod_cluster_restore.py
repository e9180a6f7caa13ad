"""The cluster restore on kubeadm-shaped nodes: etcd, kube-apiserver and kube-controller-manager as
static pods, each node with its own (test) kubelet. The kubelets' event logs show the order the
design promises: every apiserver stopped before any etcd, started again only after every etcd is
back, and the controllers restarted after that."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import seed
from tests.e2e.test_cluster_restore import assert_restored, disaster
from tests.helpers.etcd import EtcdBuild
from tests.helpers.kubelet import TestKubelet
from tests.helpers.manifests import apiserver_manifest_json, etcd_manifest_yaml
from tests.helpers.net import free_server_port, wait_until
from tests.helpers.restore_rig import RestoreRig
from tests.helpers.standins import apiserver_command, livez

pytestmark = pytest.mark.slow


def controller_manifest_json(port: int) -> str:
    """A stand-in kube-controller-manager pod (the stand-in HTTP server under another name)."""
    argv = apiserver_command(port)
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
                       "spec": {"terminationGracePeriodSeconds": 5,
                                "containers": [{"name": "kube-controller-manager", "command": argv[:1],
                                                "args": argv[1:]}]}}, indent=2) + "\n"


def times(kubelets: dict[str, TestKubelet], pod: str, what: str, after: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, k in kubelets.items():
        out[name] = [e.at for e in k.events_for(pod) if e.what == what and e.at >= after]
    return out


@pytest.mark.parametrize("etcd_build", ["3.5"], indirect=True)
def test_static_pods_are_fenced_stopped_started_and_restarted_in_order(etcd_factory, etcd_build: EtcdBuild,
                                                                      tmp_path: Path):
    cluster = etcd_factory.cluster(etcd_build, size=3, start=False)
    kubelets: dict[str, TestKubelet] = {}
    ports: dict[str, dict[str, int]] = {}
    try:
        for m in cluster.members:
            k = TestKubelet(tmp_path / m.name / "manifests", tmp_path / m.name / "kubelet-logs")
            k.manifests_dir.mkdir(parents=True)
            kubelets[m.name] = k.start()
            ports[m.name] = {"api": free_server_port(), "kcm": free_server_port()}
            (k.manifests_dir / "etcd.yaml").write_text(etcd_manifest_yaml(m, grace=5))
            (k.manifests_dir / "kube-apiserver.yaml").write_text(apiserver_manifest_json(ports[m.name]["api"], 5))
            (k.manifests_dir / "kube-controller-manager.yaml").write_text(
                controller_manifest_json(ports[m.name]["kcm"]))
        cluster.wait_healthy(60)
        for p in ports.values():
            wait_until(lambda p=p: livez(p["api"]) and livez(p["kcm"]), 30, what="the stand-in pods")
        seed(cluster)

        def sections(m: Any) -> dict[str, Any]:
            d = kubelets[m.name].manifests_dir
            return {"etcd": {"runtime": "static-pod", "manifest": str(d / "etcd.yaml")},
                    "apiserver": {"manifest": str(d / "kube-apiserver.yaml"),
                                  "health_url": f"http://127.0.0.1:{ports[m.name]['api']}/livez"},
                    "restart": [{"manifest": str(d / "kube-controller-manager.yaml")}],
                    "restore": {"stop_timeout": "60s", "start_timeout": "60s"}}

        rig = RestoreRig(cluster, tmp_path / "rig", runtime="static-pod", member_sections=sections)
        try:
            rig.start()
            old_id = int(cluster.members[0].status()["header"]["cluster_id"])
            entry = rig.backup()
            disaster(cluster)
            plan = rig.ctl_json("restore", "latest", "--plan")
            assert not plan["refused"], plan["refusals"]
            assert {m["runtime"] for m in plan["members"]} == {"static-pod"}
            restart = next(p for p in plan["phases"] if p["phase"] == "restart-controllers")
            assert all("kube-controller-manager" in what for _, what in restart["members"])
            began = time.monotonic()   # the kubelets stamp their events with this clock
            r = rig.ctl("restore", "latest", "--yes", "--json")
            assert r.returncode == 0, f"{r.stderr}\n{r.stdout}"
            summary = json.loads(r.stdout)
            assert summary["state"] == "done"
            assert_restored(cluster, old_id, entry["revision"], True)
        except BaseException:
            rig.dump_logs()
            raise
        finally:
            rig.stop()

        # Every apiserver was stopped before any etcd was asked to stop ...
        api_stopped = times(kubelets, "kube-apiserver.yaml", "stopped", began)
        etcd_term = times(kubelets, "etcd.yaml", "sigterm", began)
        etcd_started = times(kubelets, "etcd.yaml", "started", began)
        api_started = times(kubelets, "kube-apiserver.yaml", "started", began)
        kcm_stopped = times(kubelets, "kube-controller-manager.yaml", "stopped", began)
        kcm_started = times(kubelets, "kube-controller-manager.yaml", "started", began)
        for name in kubelets:
            assert len(api_stopped[name]) == 1 and len(etcd_term[name]) == 1, (name, api_stopped, etcd_term)
            assert len(etcd_started[name]) == 1 and len(api_started[name]) == 1
            assert len(kcm_stopped[name]) == 1 and len(kcm_started[name]) == 1
        assert max(t[0] for t in api_stopped.values()) < min(t[0] for t in etcd_term.values())
        # ... started again only after every etcd was started (the journal: after quorum and verify) ...
        assert min(t[0] for t in api_started.values()) > max(t[0] for t in etcd_started.values())
        # ... and the controllers were restarted after the apiservers were back.
        assert min(t[0] for t in kcm_stopped.values()) > max(t[0] for t in api_started.values())
        for p in ports.values():
            assert livez(p["api"]) and livez(p["kcm"])
        # the manifests are all back where the kubelets read them, none left parked
        for k in kubelets.values():
            assert sorted(f.name for f in k.manifests_dir.iterdir()) == [
                "etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml"]
    finally:
        for k in kubelets.values():
            k.stop_all()
        assert all(k.errors == [] for k in kubelets.values())
