"""disarm: deactivate a NOSPACE alarm, but only once space is back.

A member raises NOSPACE when its database reaches ``--quota-backend-bytes``;
until the alarm is disarmed the cluster takes no writes. It is disarmed only
when every alarmed member's database is below QUOTA_ROOM of its quota after
the defragmentation; otherwise it stays, and the step says what to free.
"""

from __future__ import annotations

from typing import Any, Optional

from etcdguard.common.base.durations import format_bytes
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.common.ops.ports import ClusterRun
from etcdguard.common.ops.step import Step, StepFailed
from etcdguard.common.wire.report import EtcdHealth

DEFAULT_QUOTA = 2 * 1024**3
QUOTA_ROOM = 0.8     # the database must be below 80% of the quota before NOSPACE is disarmed


def space_back(h: EtcdHealth, quota: Optional[int]) -> Optional[str]:
    """None when the member's database is small enough to disarm NOSPACE (pure); else why not."""
    limit = (quota or DEFAULT_QUOTA) * QUOTA_ROOM
    if h.db_size is None:
        return "its database size is unknown"
    if h.db_size >= limit:
        return (f"its database is {format_bytes(h.db_size)}, not below {format_bytes(int(limit))} "
                f"({QUOTA_ROOM:.0%} of the quota): delete or compact data first")
    return None


class Disarm(Step):
    name = "disarm"
    on_agent = False
    on_failure = "report: the alarm stays; free space, then disarm"

    def what(self, plan: RestorePlan) -> str:
        return (f"a NOSPACE alarm deactivated (Maintenance.Alarm DEACTIVATE) only once every alarmed member's "
                f"database is below {QUOTA_ROOM:.0%} of its quota; other alarms left alone")

    def phase(self, run: ClusterRun) -> None:
        health = {n: h for n, (h, _) in run.inspect_all(run.names).items()}
        ids = {h.member_id: n for n, h in health.items() if h.member_id}
        raised = sorted({a for h in health.values() for a in h.alarms if a.endswith(":NOSPACE")})
        if not raised:
            run.say(self.name, "no NOSPACE alarm: nothing to disarm")
            return
        quotas = {m.member: m.quota_backend_bytes for m in run.plan.members}
        blocked = []
        for alarm in raised:
            member = ids.get(alarm.split(":", 1)[0])
            why = space_back(health[member], quotas.get(member)) if member else "the member is not one of ours"
            if why:
                blocked.append(f"{member or alarm}: {why}")
        if blocked:
            raise StepFailed(self.name, "NOSPACE not disarmed, space is not back: " + "; ".join(blocked))
        via = next(n for n, h in sorted(health.items()) if h.leader)

        def act(name: str) -> dict[str, Any]:
            left: list[str] = []
            for alarm in raised:
                member_id = alarm.split(":", 1)[0]
                reply = run.etcd_admin(name, "alarm-disarm", {"member_id": member_id, "alarm": "NOSPACE"},
                                       self.bound(run))
                left = [str(a) for a in reply.get("alarms") or []]
            return {"disarmed": raised, "alarms": left}

        result = run.each(self.name, act, members=[via])[via]
        run.fact("disarmed", result["disarmed"])
        run.say(self.name, f"disarmed {', '.join(raised)}; alarms now: {', '.join(result['alarms']) or 'none'}")


STEP = Disarm()
