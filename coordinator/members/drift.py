"""Does etcd's member list agree with the coordinator's [[members]]? Pure: each difference, and its fix.

After a member is removed from etcd (by hand, or half-way through a
replacement) the list and the configuration differ. A difference is
accepted while an open replacement of that member explains it (the
documented, safe case); every other one is reported with the exact change
that brings the configuration back in line (or the command that brings the
cluster back to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.common.wire.report import ClusterMember


@dataclass(frozen=True)
class Drift:
    member: str
    problem: str
    fix: str
    accepted: bool = False      # explained by an open replacement of this member

    def sentence(self) -> str:
        return f"{self.member}: {self.problem}" + (" (a replacement of it is in progress)" if self.accepted
                                                   else f"; {self.fix}")


def drift(configured: Sequence[str], etcd_members: Sequence[ClusterMember],
          configured_peer_urls: Mapping[str, Optional[str]], replacing: Optional[str] = None) -> list[Drift]:
    """Every difference between the configured member names (and the peer URLs their agents report) and
    etcd's member list (pure). ``replacing``: the member an open replacement is about."""
    out: list[Drift] = []
    listed = {m.name: m for m in etcd_members if m.name}
    unstarted = [m for m in etcd_members if not m.name]
    for name in configured:
        m = listed.get(name)
        peer = configured_peer_urls.get(name)
        if m is None:
            joining = next((u for u in unstarted if peer and peer in u.peer_urls), None)
            problem = ("added to etcd but not started yet" if joining is not None
                       else "configured, but not in etcd's member list")
            out.append(Drift(name, problem, f"replace it (`etcdguardctl replace {name} --yes`) or remove its "
                                            "[[members]] entry from the coordinator's configuration and reload",
                             accepted=name == replacing))
        elif peer and peer not in m.peer_urls:
            out.append(Drift(name, f"its agent joins with peer URL {peer}, etcd lists {', '.join(m.peer_urls)}",
                             f"replace it onto that host (`etcdguardctl replace {name} --peer-url {peer} --yes`), "
                             "or point its [[members]] agent at the host etcd lists", accepted=name == replacing))
    for name, m in sorted(listed.items()):
        if name not in configured:
            out.append(Drift(name, f"in etcd's member list ({', '.join(m.peer_urls)}) but not configured",
                             f'add [[members]] name = "{name}", agent = "tcp://HOST:7479", public_key = '
                             f'"/etc/etcdguard/keys/{name}.key" to the coordinator\'s configuration and reload '
                             "(or remove it from etcd if it is gone)"))
    for m in unstarted:
        if not any(configured_peer_urls.get(n) in m.peer_urls for n in configured):
            out.append(Drift(m.id, f"an unstarted member ({', '.join(m.peer_urls)}) no configured agent joins with",
                             f"remove it (`etcdctl member remove {m.id}`) or start the member it stands for"))
    return out
