"""Pure decisions a node-local restore makes before it touches anything.

Each takes plain facts (gathered by steps.py from etcd, the snapshot file and
this node's operation records) and returns a typed outcome with one sentence
of why, so the same words reach `--plan`, the refusal and the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from etcdguard.common.base.addresses import parse_initial_cluster

MULTI_MEMBER_HINT = ("restore the whole cluster with `etcdguardctl restore SNAPSHOT --plan` (the coordinator "
                     "restores every member from the same snapshot), or replace only this member "
                     "(etcdctl member remove/add) if the others are healthy")


@dataclass(frozen=True)
class ClusterFacts:
    """Who a cluster is: its id(s) and members. Ids are hex, as etcdctl prints them."""

    cluster_ids: tuple[str, ...]     # recorded and/or derived; any one of them identifies it
    member_ids: tuple[str, ...]
    member_names: tuple[str, ...]
    where: str                       # "the snapshot's sidecar", "the live cluster", ... for the sentence

    def describe(self) -> str:
        ids = "/".join(self.cluster_ids) or "unknown"
        names = ", ".join(self.member_names) or "no names recorded"
        return f"cluster {ids} (members {names}; from {self.where})"


class Identity(enum.Enum):
    SAME = "same-cluster"              # the live cluster is the one the snapshot was taken from
    EARLIER = "earlier-incarnation"    # this node's cluster before one of its restores
    FOREIGN = "another-cluster"        # refused unless forced
    LIVE_UNKNOWN = "live-unknown"      # etcd did not answer: nothing to compare with
    SNAPSHOT_UNKNOWN = "snapshot-unknown"


@dataclass(frozen=True)
class IdentityVerdict:
    outcome: Identity
    sentence: str

    @property
    def refuses(self) -> bool:
        return self.outcome is Identity.FOREIGN


def compare_identity(snapshot: Optional[ClusterFacts], live: Optional[ClusterFacts],
                     lineage: Mapping[str, str]) -> IdentityVerdict:
    """Is the snapshot from the cluster this node serves?

    ``lineage`` maps cluster ids this node was part of (before or after one of
    its recorded restores, which each make a new cluster id) to that operation.
    Same cluster id, or a member id in common, is the same cluster; a cluster
    id from the lineage is an earlier incarnation of it. Equal member names
    alone prove nothing (every minikube member is called "minikube").
    """
    if snapshot is None or not (snapshot.cluster_ids or snapshot.member_ids):
        return IdentityVerdict(Identity.SNAPSHOT_UNKNOWN,
                               "the snapshot records no cluster id or members; its origin was not compared")
    if live is None:
        return IdentityVerdict(Identity.LIVE_UNKNOWN,
                               f"the snapshot is from {snapshot.describe()}; this node's cluster is unknown "
                               "(etcd did not answer and its data dir names no members), so it was not compared")
    same_cluster = sorted(set(snapshot.cluster_ids) & set(live.cluster_ids))
    if same_cluster:
        return IdentityVerdict(Identity.SAME, f"the snapshot is from this cluster ({same_cluster[0]})")
    shared = sorted(set(snapshot.member_ids) & set(live.member_ids))
    if shared:
        return IdentityVerdict(Identity.SAME, f"the snapshot is from this cluster (member id {shared[0]} "
                                              "is in both)")
    for cid in snapshot.cluster_ids:
        if cid in lineage:
            return IdentityVerdict(Identity.EARLIER,
                                   f"the snapshot is from cluster {cid}, this node's cluster before or after "
                                   f"restore {lineage[cid]}")
    names = sorted(set(snapshot.member_names) & set(live.member_names))
    alike = (f" The member names {', '.join(names)} match, which alone does not prove it is the same cluster "
             "(it may have been restored outside etcdguard)." if names else "")
    return IdentityVerdict(Identity.FOREIGN,
                           f"the snapshot is from another cluster: {snapshot.describe()}, while this node "
                           f"serves {live.describe()}.{alike} Restoring it replaces this cluster's data with "
                           "that cluster's; if that is intended (moving a cluster to new hardware), run again "
                           "with --force")


def initial_cluster_names(initial_cluster: Optional[str]) -> list[str]:
    """Member names in an --initial-cluster value (name=url,name=url; a name may repeat for its URLs).

    None or "" (no initial cluster configured) has none. A malformed value is a ValueError saying
    what is wrong; discovery has refused one already, so a LocalMember's value always reads.
    """

    if not initial_cluster:
        return []
    return list(dict.fromkeys(name for name, _ in parse_initial_cluster(initial_cluster)))


def multi_member_refusal(member: str, live_members: Optional[Sequence[str]],
                         initial_cluster: Optional[str]) -> Optional[str]:
    """Why a node-local restore must not run here, or None on a single-member cluster.

    Restoring one member alone plans an initial cluster of that member only,
    which splits it off into a cluster of its own. Either the live member list
    (when etcd answers) or the configured --initial-cluster having more than
    one member is enough to refuse.
    """
    reasons = []
    if live_members is not None and len(live_members) > 1:
        reasons.append(f"the live member list has {len(live_members)} members ({', '.join(live_members)})")
    configured = initial_cluster_names(initial_cluster)
    if len(configured) > 1:
        reasons.append(f"its configured --initial-cluster has {len(configured)} ({', '.join(configured)})")
    if not reasons:
        return None
    return (f"member {member} is part of a multi-member cluster: {' and '.join(reasons)}. A node-local "
            f"restore would split it off into a one-member cluster of its own; {MULTI_MEMBER_HINT}")
