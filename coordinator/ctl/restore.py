"""etcdguardctl restore / restores: the cluster-wide restore, which runs inside the daemon.

``restore SNAPSHOT --plan`` shows the plan; ``--yes`` runs it (``--plan-id``:
only while the plan is the reviewed one) and follows its progress;
``--resume``, ``--rollback``, ``--attach`` and ``--cleanup`` act on an
existing operation. Losing this terminal does not stop a restore: attach again.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EXIT_OK, EXIT_UNSAFE, UsageError
from etcdguard.common.ops.cluster_plan import OVERRIDES, RestorePlan
from etcdguard.common.ops.flows import CLUSTER_RESTORE, FLOWS
from etcdguard.coordinator.ctl.cli import _json_flag, _table, ask, command, emit
from etcdguard.coordinator.pitr.plan import render_point
from etcdguard.coordinator.pitr.times import parse_moment
from etcdguard.coordinator.restore.plan import render_plan


class RestoreProgress:
    """Phases and members on stderr with the time since start; transfers as a line per 25% and member."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._pct: dict[str, int] = {}

    def __call__(self, p: dict[str, Any]) -> None:
        if p.get("heartbeat"):
            return
        stamp = f"[{format_duration(time.monotonic() - self.started):>6}]"
        phase = str(p.get("phase", ""))
        member = f"{p['member']}: " if p.get("member") else ""
        if "bytes" in p and "total" in p:
            done, total = int(p["bytes"]), max(1, int(p["total"]))
            step = 100 * done // total // 25
            key = f"{phase}/{p.get('member')}"
            if self._pct.get(key) == step and done < total:
                return
            self._pct[key] = step
            sys.stderr.write(f"{stamp} {phase:<19} {member}{format_bytes(done)} / {format_bytes(total)} "
                             f"({100 * done // total}%)\n")
        elif p.get("message"):
            sys.stderr.write(f"{stamp} {phase:<19} {member}{p['message']}\n")
        sys.stderr.flush()


def _restore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help="vault id (a sha256 prefix) or 'latest'")
    p.add_argument("--to-revision", type=int, metavar="N",
                   help="point-in-time: the cluster as it was at revision N (a full snapshot plus the captured "
                        "changes up to N, built on this host first)")
    p.add_argument("--to-time", metavar="T",
                   help="point-in-time: the cluster as it was at T (RFC 3339 with a zone, e.g. 2026-12-05T14:32:05Z, "
                        "or a duration ago: 5m, '5m ago')")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print the restore plan; change nothing")
    mode.add_argument("--resume", metavar="OP", help="continue an interrupted or paused restore")
    mode.add_argument("--rollback", metavar="OP", help="put every member back on its pre-restore data")
    mode.add_argument("--attach", metavar="OP", help="follow a running restore (or show how one ended)")
    mode.add_argument("--cleanup", metavar="OP", help="show (with --yes: delete) the data an ended restore kept")
    mode.add_argument("--cancel", metavar="OP", help="stop a running restore at its next step boundary and roll it "
                                                    "back while no client has seen its data")
    p.add_argument("--yes", action="store_true", help="run the restore (with --rollback/--cleanup: confirm)")
    p.add_argument("--plan-id", metavar="ID", help="with --yes: run only if the plan is still this one")
    p.add_argument("--until", metavar="PHASE", choices=CLUSTER_RESTORE.names,
                   help="with --yes: stop after PHASE (e.g. prepare: stage and restore ahead, without downtime); "
                        "continue with --resume")
    p.add_argument("--allow-other-cluster", action="store_true",
                   help="restore a snapshot of another cluster (one no recorded restore connects to this one)")
    p.add_argument("--allow-version-mismatch", action="store_true",
                   help="restore a snapshot taken from another etcd minor version")
    p.add_argument("--allow-mixed-cluster-ids", action="store_true",
                   help="restore members that report different cluster ids into one cluster")
    p.add_argument("--force", action="store_true",
                   help="all of the --allow-... overrides at once (the plan lists which it accepted)")
    _json_flag(p)


def _mode(args: argparse.Namespace) -> str:
    """Which restore action the flags ask for (``--yes`` also confirms --rollback/--cleanup)."""
    for flag in ("resume", "rollback", "attach", "cleanup", "cancel"):
        if getattr(args, flag):
            if args.yes and flag in ("resume", "attach", "cancel"):
                raise UsageError(f"--{flag} takes no --yes")
            return flag
    if args.plan:
        if args.yes:
            raise UsageError("give --plan or --yes, not both")
        return "plan"
    if args.yes:
        return "run"
    raise UsageError("restore needs --plan, --yes, --resume OP, --rollback OP, --attach OP, --cleanup OP or "
                     "--cancel OP")


def _point_request(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The request of a point-in-time restore (--to-revision / --to-time); UsageError for what does not go."""
    if args.to_revision is not None and args.to_time is not None:
        raise UsageError("give --to-revision or --to-time, not both")
    if mode not in ("plan", "run"):
        raise UsageError("--to-revision and --to-time go with --plan or --yes")
    if args.snapshot:
        raise UsageError("a point-in-time restore chooses its own full snapshot: give no SNAPSHOT with "
                         "--to-revision or --to-time")
    if args.plan_id:
        raise UsageError("--plan-id is not for a point-in-time restore (its snapshot is built after the plan)")
    if args.to_revision is not None and args.to_revision < 0:
        raise UsageError("--to-revision: a revision is a whole number >= 0")
    request: dict[str, Any] = {"mode": mode, "force": args.force, "overrides": [
        name for name in OVERRIDES if getattr(args, name.replace("-", "_"))]}
    if args.to_revision is not None:
        request["to_revision"] = args.to_revision
    else:
        request["to_time"] = parse_moment(args.to_time, time.time())
    if args.until:
        request["until"] = args.until
    return request


def _snapshot_request(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The request of a restore of SNAPSHOT, or of an action on operation OP; UsageError for what does not go."""
    if mode in ("plan", "run") and not args.snapshot:
        raise UsageError("give the SNAPSHOT to restore (a vault id, a sha256 prefix, or 'latest'), or a point in "
                         "time with --to-revision N or --to-time T")
    if mode not in ("plan", "run") and args.snapshot:
        raise UsageError(f"--{mode} takes an operation id, not a snapshot")
    if args.plan_id and mode != "run":
        raise UsageError("--plan-id goes with --yes")
    if args.until and mode != "run":
        raise UsageError("--until goes with --yes")
    given = [f"--{name}" for name in OVERRIDES if getattr(args, name.replace("-", "_"))]
    if (given or args.force) and mode not in ("plan", "run"):
        raise UsageError(f"{(given or ['--force'])[0]} goes with --plan or --yes")
    request: dict[str, Any] = {"mode": mode}
    if mode in ("plan", "run"):
        request.update(snapshot=args.snapshot, force=args.force, overrides=[
            name for name in OVERRIDES if getattr(args, name.replace("-", "_"))])
        if args.plan_id:
            request["plan_id"] = args.plan_id
        if args.until:
            request["until"] = args.until
    else:
        request["op"] = getattr(args, mode)
        request["yes"] = args.yes
    return request


@command("restore", "restore the whole cluster from a vault snapshot (--plan first, then --yes)", _restore_args)
def cmd_restore(args: argparse.Namespace) -> int:
    mode = _mode(args)
    if args.to_revision is not None or args.to_time is not None:
        return _point_in_time(args, _point_request(args, mode))
    request = _snapshot_request(args, mode)
    if mode == "plan":
        data = ask(args, "restore", request)
        plan = RestorePlan.from_json(data)
        emit(args, {**data, "op": plan.op}, render_plan(plan))
        return EXIT_UNSAFE if plan.blocking else EXIT_OK
    progress = RestoreProgress()   # on stderr, also with --json (stdout carries only the JSON)
    result = ask(args, "restore", request, on_progress=progress)
    if mode == "cleanup":
        emit(args, result, _render_cleanup(result))
        return EXIT_OK
    if isinstance(result, dict) and result.get("needs_yes"):
        plan = RestorePlan.from_json(result["plan"])
        emit(args, {**result, "op": plan.op}, render_plan(plan) + f"\n  confirm with: etcdguardctl restore "
                                                                   f"--rollback {request['op']} --yes")
        return EXIT_UNSAFE if plan.blocking else EXIT_OK
    emit(args, result, render_summary(result))
    return EXIT_OK if result.get("state") in ("done", "paused", "rolled-back") else 1


def _point_in_time(args: argparse.Namespace, request: dict[str, Any]) -> int:
    if request["mode"] == "plan":
        data = ask(args, "restore", request)
        point = data.pop("point_in_time")
        plan = RestorePlan.from_json(data)
        run_with = f"etcdguardctl restore --to-revision {point['revision']} --yes"
        emit(args, {**data, "op": plan.op, "point_in_time": point},
             render_point(point, plan.discarded_revisions, plan.live_revision) + "\n\n"
             + render_plan(plan, run_with=run_with))
        return EXIT_UNSAFE if plan.blocking else EXIT_OK
    result = ask(args, "restore", request, on_progress=RestoreProgress())
    point = result.get("point_in_time") or {}
    head = (f"point-in-time restore to revision {point.get('revision')} of cluster {point.get('cluster_id')} "
            f"(snapshot {str(point.get('snapshot', ''))[:12]}, pinned in the vault)\n")
    emit(args, result, head + render_summary(result))
    return EXIT_OK if result.get("state") in ("done", "paused", "rolled-back") else 1


def render_summary(s: dict[str, Any]) -> str:
    lines = [f"restore {s['op']}: {s['state'].upper()}" + (f" (failed in {s['failed_phase']})"
                                                           if s.get("failed_phase") else "")]
    if s.get("error"):
        lines.append(f"  error: {s['error']}")
    for timing in s.get("phases") or []:
        lines.append(f"  {timing['phase']:<19} {format_duration(float(timing['seconds']))}")
    lines += _render_times(s)
    if s.get("new_cluster_id"):
        lines.append(f"  cluster id {s['old_cluster_id']} -> {s['new_cluster_id']}" if s.get("old_cluster_id")
                     else f"  new cluster id {s['new_cluster_id']} (the old one was not known: no member answered)")
    for member, path in s.get("kept") or []:
        lines.append(f"  {member}: pre-restore data kept in {path}")
    if s.get("pre_restore_snapshot"):
        lines.append(f"  pre-restore snapshot {s['pre_restore_snapshot'][:12]} is in the vault (pinned)")
    for note in s.get("notes") or []:
        lines.append(f"  note: {note}")
    if s["state"] == "done":
        lines.append(f"  delete the kept data once you are sure: etcdguardctl restore --cleanup {s['op']} --yes")
    elif s["state"] in ("interrupted", "paused", "needs-attention"):
        lines.append(f"  continue: etcdguardctl restore --resume {s['op']}   "
                     f"roll back: etcdguardctl restore --rollback {s['op']}")
    return "\n".join(lines)


def _render_times(s: dict[str, Any]) -> list[str]:
    lines = []
    if s.get("down_before"):
        lines.append("  the cluster was down before the restore started: every second of it was downtime")
    if s.get("time_to_healthy_seconds") is not None:
        lines.append(f"  healthy again {format_duration(float(s['time_to_healthy_seconds']))} after the restore "
                     "started")
    if s.get("total_seconds") is not None:
        downtime = s.get("downtime_seconds")
        lines.append(f"  total {format_duration(float(s['total_seconds']))}"
                     + (f", downtime {format_duration(float(downtime))} (fence to unfence)"
                        if downtime is not None and not s.get("down_before") else ""))
    return lines


def _render_cleanup(result: dict[str, Any]) -> str:
    lines = []
    for member, info in sorted((result.get("members") or {}).items()):
        if info.get("error"):
            lines.append(f"  {member}: {info['error']}")
        for path in info.get("removed") or []:
            lines.append(f"  {member}: deleted {path}")
        for kept in info.get("kept") or []:
            lines.append(f"  {member}: would delete {kept.get('path')} ({format_bytes(int(kept.get('bytes', 0)))})")
    head = "deleted:" if result.get("deleted") else "kept data (run again with --yes to delete it):"
    return "\n".join([head, *lines]) if lines else "nothing kept on any member"


@command("restores", "list the cluster restore operations and their state", _json_flag)
def cmd_restores(args: argparse.Namespace) -> int:
    records = ask(args, "restores")
    if args.json:
        emit(args, records, "")
        return EXIT_OK
    if not records:
        print("no restore operations")
        return EXIT_OK
    rows = [["OP", "STATE", "STARTED", "SNAPSHOT OR WHAT", "PHASE"]]
    damaged = []
    for r in records:
        if r.get("state") in ("damaged", "orphaned"):
            damaged.append(r)
            rows.append([r["op"], r["state"].upper(), "-", "-", "-"])
            continue
        flow = FLOWS.get(r.get("flow") or "restore", CLUSTER_RESTORE)
        reached = [p for p in flow.names if p in (r.get("phases") or {})]
        what = r["snapshot"][:12] if r.get("snapshot") else f"{flow.name} {r.get('target') or ''}".strip()
        rows.append([r["op"], r["state"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["created_at"])),
                     what, r.get("failed_phase") or (reached[-1] if reached else "-")])
    print(_table(rows))
    for r in damaged:
        print(f"  {r['op']}: {r.get('error')}; new restores are refused until it is ended", file=sys.stderr)
    return EXIT_OK
