"""The administrative calls the coordinator asks this agent to make to its local etcd (``etcd.admin``).

The coordinator holds no etcd credentials: a member replacement changes the
membership, and a defragmentation defragments each member, through the
members' agents, which have them. Each call is one gRPC request to the local
member, answered with plain data (members with ids in hex, as etcdctl prints
them). A defragmentation is answered with the database's size before and
after.
"""

from __future__ import annotations

import time
from typing import Any

from etcdguard.agent.discovery.member import LocalMember
from etcdguard.common.base.errors import UsageError
from etcdguard.common.etcd.client import EtcdClient, MemberInfo

DEFAULT_TIMEOUT = 30.0


def _member(m: MemberInfo) -> dict[str, Any]:
    return {"id": f"{m.id:x}", "name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls),
            "is_learner": m.is_learner}


def _sizes(client: EtcdClient, timeout: float) -> dict[str, Any]:
    st = client.status(timeout)
    return {"db_size": st.db_size, "db_size_in_use": st.db_size_in_use, "revision": st.revision}


def administer(member: LocalMember, args: dict[str, Any]) -> dict[str, Any]:
    """Run one ``etcd.admin`` action against the local member; its plain-data answer."""
    action = args["action"]
    timeout = float(args.get("timeout") or DEFAULT_TIMEOUT)
    with EtcdClient(member.endpoint, member.tls, timeout) as client:
        if action == "member-list":
            return {"members": [_member(m) for m in client.members()]}
        if action == "member-add":
            added, members = client.member_add((args["peer_url"],), bool(args.get("learner")))
            return {"added": _member(added), "members": [_member(m) for m in members]}
        if action == "member-remove":
            return {"members": [_member(m) for m in client.member_remove(int(args["member_id"], 16))]}
        if action == "member-promote":
            return {"members": [_member(m) for m in client.member_promote(int(args["member_id"], 16))]}
        if action == "alarm-disarm":
            return {"alarms": client.alarm_disarm(int(args["member_id"], 16), args["alarm"])}
        if action == "defragment":
            before = _sizes(client, min(timeout, 5.0))
            began = time.monotonic()
            client.defragment(timeout)
            seconds = round(time.monotonic() - began, 3)
            return {"before": before, "after": _sizes(client, min(timeout, 5.0)), "seconds": seconds}
    raise UsageError(f"etcd.admin: unknown action {action!r}")
