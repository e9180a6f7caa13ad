"""Static-pod manifests for tests: etcd (kubeadm-style YAML) and the stand-in kube-apiserver (JSON)."""

from __future__ import annotations

import json

from .etcd import EtcdMember
from .standins import apiserver_command


def etcd_manifest_yaml(member: EtcdMember, grace: int) -> str:
    """A kubeadm-style YAML manifest for ``member`` (plain, unquoted flags as kubeadm writes them)."""
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        "  name: etcd",
        "  namespace: kube-system",
        "  labels:",
        "    component: etcd",
        "spec:",
        f"  terminationGracePeriodSeconds: {grace}",
        "  containers:",
        "  - name: etcd",
        f"    image: registry.k8s.io/etcd:{member.build.version}-0",
        "    command:",
        *[f"    - {arg}" for arg in member.command],
        "  hostNetwork: true",
    ]
    return "\n".join(lines) + "\n"


def apiserver_manifest_json(port: int, grace: int, ignore_sigterm: bool = False) -> str:
    argv = apiserver_command(port, ignore_sigterm=ignore_sigterm)
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "kube-apiserver", "namespace": "kube-system"},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "kube-apiserver", "command": argv[:1], "args": argv[1:]}],
        },
    }
    return json.dumps(doc, indent=2) + "\n"
