"""etcdguardctl replace / defrag: operations on members, run inside the daemon like a restore.

``replace MEMBER --plan`` shows what replacing a member takes (and every
reason it is refused); ``--yes`` runs it and follows its progress;
``--resume``, ``--rollback`` and ``--attach`` act on an existing one.
``defrag [--member NAME]`` defragments one member at a time, followers
first and the leader last.
"""

from __future__ import annotations

import argparse
from typing import Any

from etcdguard.common.base.durations import format_duration
from etcdguard.common.base.errors import EXIT_OK, EXIT_UNSAFE, UsageError
from etcdguard.common.ops.cluster_plan import RestorePlan
from etcdguard.coordinator.ctl.cli import _json_flag, ask, command, emit
from etcdguard.coordinator.ctl.restore import RestoreProgress
from etcdguard.coordinator.members.plan import render_member_plan


def _common(p: argparse.ArgumentParser, *, rollback: bool) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print the plan; change nothing")
    mode.add_argument("--resume", metavar="OP", help="continue an interrupted operation")
    if rollback:
        mode.add_argument("--rollback", metavar="OP", help="undo an interrupted replacement that has not yet removed "
                                                          "the member from etcd")
    mode.add_argument("--attach", metavar="OP", help="follow a running operation (or show how one ended)")
    p.add_argument("--yes", action="store_true", help="run it")
    p.add_argument("--plan-id", metavar="ID", help="with --yes: run only if the plan is still this one")
    _json_flag(p)


def _replace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("member", nargs="?", metavar="MEMBER", help="the member to replace (its [[members]] name)")
    p.add_argument("--peer-url", metavar="URL",
                   help="the peer URL it joins with (a replacement on a new host: confirms the new URL its agent "
                        "runs etcd with)")
    _common(p, rollback=True)


def _defrag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", metavar="NAME", help="defragment only this member (default: every member)")
    _common(p, rollback=False)


def _mode(args: argparse.Namespace, name: str) -> str:
    for flag in ("resume", "rollback", "attach"):
        if getattr(args, flag, None):
            if args.yes or args.plan_id:
                raise UsageError(f"--{flag} takes no --yes or --plan-id")
            return flag
    if args.plan and args.yes:
        raise UsageError("give --plan or --yes, not both")
    if args.plan_id and not args.yes:
        raise UsageError("--plan-id goes with --yes")
    if args.plan:
        return "plan"
    if args.yes:
        return "run"
    raise UsageError(f"{name} needs --plan, --yes, --resume OP" + (", --rollback OP" if name == "replace" else "")
                     + " or --attach OP")


def _request(args: argparse.Namespace, name: str, target: Any) -> tuple[str, dict[str, Any]]:
    mode = _mode(args, name)
    request: dict[str, Any] = {"mode": mode}
    if mode in ("plan", "run"):
        if target:
            request["member"] = target
        if args.plan_id:
            request["plan_id"] = args.plan_id
    else:
        request["op"] = getattr(args, mode)
    return mode, request


def _finish(args: argparse.Namespace, name: str, mode: str, request: dict[str, Any]) -> int:
    if mode == "plan":
        data = ask(args, name, request)
        plan = RestorePlan.from_json(data)
        emit(args, {**data, "op": plan.op}, render_member_plan(plan))
        return EXIT_UNSAFE if plan.blocking else EXIT_OK
    result = ask(args, name, request, on_progress=RestoreProgress())
    emit(args, result, render_member_summary(name, result))
    return EXIT_OK if result.get("state") in ("done", "rolled-back") else 1


@command("replace", "replace one member while the others keep quorum: remove it, set its data aside, add it back "
                    "as a learner, sync, promote (--plan first, then --yes)", _replace_args)
def cmd_replace(args: argparse.Namespace) -> int:
    mode, request = _request(args, "replace", args.member)
    if mode in ("plan", "run"):
        if not args.member:
            raise UsageError("give the MEMBER to replace")
        if args.peer_url:
            request["peer_url"] = args.peer_url
    elif args.member or args.peer_url:
        raise UsageError(f"--{mode} takes an operation id, not a member")
    return _finish(args, "replace", mode, request)


@command("defrag", "defragment every member (or --member NAME), one at a time, followers first and the leader "
                   "last; a NOSPACE alarm is disarmed once space is back (--plan first, then --yes)", _defrag_args)
def cmd_defrag(args: argparse.Namespace) -> int:
    mode, request = _request(args, "defrag", args.member)
    if mode not in ("plan", "run") and args.member:
        raise UsageError(f"--{mode} takes an operation id, not a member")
    return _finish(args, "defrag", mode, request)


def render_member_summary(name: str, s: dict[str, Any]) -> str:
    target = f" {s['target']}" if s.get("target") else ""
    lines = [f"{name}{target} {s['op']}: {s['state'].upper()}"
             + (f" (failed in {s['failed_phase']})" if s.get("failed_phase") else "")]
    if s.get("error"):
        lines.append(f"  error: {s['error']}")
    for timing in s.get("phases") or []:
        lines.append(f"  {timing['phase']:<14} {format_duration(float(timing['seconds']))}")
    if s.get("time_to_healthy_seconds") is not None:
        lines.append(f"  healthy, caught up and promoted {format_duration(float(s['time_to_healthy_seconds']))} "
                     "after it started")
    if s.get("total_seconds") is not None:
        lines.append(f"  total {format_duration(float(s['total_seconds']))}; the cluster served throughout")
    for member, path in s.get("kept") or []:
        lines.append(f"  {member}: its old data kept in {path}")
    if s["state"] in ("interrupted", "needs-attention", "paused"):
        lines.append(f"  continue: etcdguardctl {name} --resume {s['op']}")
    return "\n".join(lines)
