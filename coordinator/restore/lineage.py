"""Which cluster ids are this cluster: the ids every restore produced from which.

A restore gives the cluster a new id (a fresh token), so a scheduled snapshot
taken before the restore carries an id the live cluster no longer has. Without
a record of that, restoring this cluster's own older backup would look like
restoring another cluster's and need an override, which trains operators to
override. Each done restore links the snapshot's cluster id and the live id
before it to the new id after it; the ids connected to the live one are its
lineage.

The links are kept in ``<state_dir>/lineage.jsonl`` (the shared journal
library: appended, fsync'd) and are also read from the restore journals, so
a lineage survives either being moved away.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from etcdguard.common.journal import JournalFile
from etcdguard.common.ops.states import OpState
from etcdguard.coordinator.restore.journal import ClusterOperation

LINEAGE = "lineage.jsonl"
Link = tuple[str, str]


def links_of(operations: Iterable[ClusterOperation]) -> list[Link]:
    """(before, after) links every done restore made (pure over the journals)."""
    out: list[Link] = []
    for operation in operations:
        if operation.state is not OpState.DONE or operation.plan.snapshot is None:
            continue   # only restores make a new cluster id
        after = operation.facts.get("new_cluster_id")
        if not isinstance(after, str) or not after:
            continue
        for before in (operation.plan.snapshot.cluster_id, operation.facts.get("old_cluster_id"),
                       operation.plan.live_cluster_id):
            if isinstance(before, str) and before and before != after:
                out.append((before, after))
    return out


def component(links: Iterable[Link], start: str) -> frozenset[str]:
    """Every cluster id connected to ``start`` through the links (pure; ``start`` included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in links:
        graph[a].add(b)
        graph[b].add(a)
    seen = {start}
    todo = [start]
    while todo:
        for other in graph[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return frozenset(seen)


class Lineage:
    """The lineage file in the coordinator's state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.file = JournalFile(state_dir / LINEAGE)

    def record(self, operation: ClusterOperation) -> None:
        """Append the links a done restore made (nothing for one that made none)."""
        for before, after in links_of([operation]):
            self.file.append("restored", op=operation.op, before=before, after=after)

    def links(self) -> list[Link]:
        try:
            records = self.file.read().records
        except FileNotFoundError:
            return []
        return [(str(r["before"]), str(r["after"])) for r in records
                if r.get("event") == "restored" and r.get("before") and r.get("after")]

    def of(self, live_cluster_id: str, operations: Iterable[ClusterOperation]) -> frozenset[str]:
        """The cluster ids that are ``live_cluster_id``'s lineage (recorded links and journals together)."""
        return component([*self.links(), *links_of(operations)], live_cluster_id)
