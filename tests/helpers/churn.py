"""A Kubernetes-like stream of changes for continuous backup tests: seeded, recorded as the capture should.

Keys as the kube-apiserver writes them (``/registry/<resource>/<namespace>/<name>``); each step is one
of: a pod or configmap written, a pod deleted, a deployment rolled (deployment, replicaset and pods in
one transaction), an event written under an etcd lease (as the apiserver does, TTL 1 h), a node lease
renewed, and now and then a lease revoked (its keys deleted in one revision). ``state_at`` is
`etcdctl get --prefix / --rev R` as data: every key with its value and lease.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from etcdguard.common.etcd import pbwire
from etcdguard.common.etcd.writes import EtcdWriter, Op, prefix_end

NAMESPACES = ("default", "kube-system", "prod", "staging")


@dataclass
class Churn:
    writer: EtcdWriter
    seed: int = 0
    rng: random.Random = field(init=False)
    leases: list[int] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)     # every revision a step made, in order

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _pod(self) -> bytes:
        ns = self.rng.choice(NAMESPACES)
        return f"/registry/pods/{ns}/web-{self.rng.randrange(30)}".encode()

    def _value(self, lo: int = 200, hi: int = 1500) -> bytes:
        return self.rng.randbytes(self.rng.randint(lo, hi))

    def _lease(self) -> int:
        if not self.leases or self.rng.random() < 0.05:
            self.leases.append(self.writer.lease_grant(3600, 0))
        return self.rng.choice(self.leases)

    def _revoke(self) -> list[Op]:
        """A lease revoked: its keys go in one revision (LeaseRevoke, not a transaction)."""
        if len(self.leases) < 2:
            return []
        lease = self.leases.pop(0)
        before = self.writer.range(b"/")[0]
        self.writer.client.unary("/etcdserverpb.Lease/LeaseRevoke", pbwire.encode_varint_field(1, lease),
                                 bytes, self.writer.timeout)
        after = self.writer.range(b"/")[0]
        if after != before:
            self.revisions.append(after)
        return []

    def step(self) -> None:
        r = self.rng.random()
        if r < 0.30:
            ops = [Op("put", self._pod(), self._value())]
        elif r < 0.40:
            ops = [Op("put", f"/registry/configmaps/{self.rng.choice(NAMESPACES)}/cm-{self.rng.randrange(10)}"
                                .encode(), self._value(50, 4000))]
        elif r < 0.55:
            ops = [Op("del", self._pod())]
        elif r < 0.65:
            ns, app = self.rng.choice(NAMESPACES), self.rng.randrange(5)
            ops = [Op("put", f"/registry/deployments/{ns}/app-{app}".encode(), self._value()),
                   Op("put", f"/registry/replicasets/{ns}/app-{app}-{self.rng.randrange(1000)}".encode(),
                      self._value())]
            ops += [Op("put", f"/registry/pods/{ns}/app-{app}-{i}".encode(), self._value()) for i in range(3)]
        elif r < 0.85:
            ns = self.rng.choice(NAMESPACES)
            ops = [Op("put", f"/registry/events/{ns}/ev-{self.rng.randrange(10**6)}".encode(), self._value(100, 600),
                      self._lease())]
        elif r < 0.99:
            ops = [Op("put", f"/registry/leases/kube-node-lease/node-{self.rng.randrange(3)}".encode(),
                      self._value(100, 200))]
        else:
            self._revoke()
            return
        before = self.writer.range(b"/")[0] if ops[0].kind == "del" else None
        revision = self.writer.txn(ops)
        if before is None or revision != before:       # a delete of a missing key makes no revision
            self.revisions.append(revision)

    def run(self, steps: int) -> list[int]:
        for _ in range(steps):
            self.step()
        return self.revisions


def state_at(writer: EtcdWriter, revision: int = 0) -> list[tuple[bytes, bytes, int]]:
    """Every key under / with its value and lease at ``revision`` (0: now): `etcdctl get --prefix /`."""
    _, kvs = writer.range(b"/", prefix_end(b"/"), revision)
    return [(kv.key, kv.value, kv.lease) for kv in kvs]
