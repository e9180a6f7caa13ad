"""etcdguard-agent restore / rollback / restores / cleanup (single-node restores).

The restore machinery is imported inside each command: these commands are
registered on every start of `etcdguard-agent`, and a one-shot command such as
`snapshot` should not pay for the restore steps, the runtimes and gRPC here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from etcdguard.agent.cli import PROG, _json_flag, command, discover_member, emit, load_config
from etcdguard.common.base.durations import format_bytes, format_duration
from etcdguard.common.base.errors import EXIT_OK, EXIT_UNSAFE, UnsafeRefusal, UsageError

if TYPE_CHECKING:
    from etcdguard.agent.config import AgentConfig
    from etcdguard.agent.restore.engine import NodeEngine
    from etcdguard.agent.restore.plan import PlannedStep
    from etcdguard.common.ops.params import RestoreParams
    from etcdguard.common.snapshot.integrity import Recorded


def _engine(config: AgentConfig, quiet: bool) -> NodeEngine:
    from etcdguard.agent.restore.engine import NodeEngine
    from etcdguard.agent.runtime.factory import make_runtime
    from etcdguard.common.snapshot.tools import find_tool

    member = discover_member(config)
    runtime = make_runtime(config, member, config.state.dir)
    tool = find_tool(config.etcd.restore_tool)
    started = time.monotonic()
    index = {"n": 0}

    def progress(step: str, message: str) -> None:
        if quiet:
            return
        if message == "running":
            index["n"] += 1
        sys.stderr.write(f"[{format_duration(time.monotonic() - started):>6}] {step:<9} {message}\n")
        sys.stderr.flush()

    return NodeEngine(config, member, runtime, tool, progress)


def resolve_snapshot(config: AgentConfig, ref: str) -> tuple[Path, Optional[Recorded]]:
    """A file path, a snapshot name in the local store, or `latest`, with its catalog record if it has one."""
    from etcdguard.agent.restore.opening import catalog_record
    from etcdguard.agent.snapshots.store import SnapshotStore
    from etcdguard.common.snapshot.integrity import Recorded

    store = SnapshotStore(config.backup.dir)
    if ref == "latest":
        newest = store.newest()
        if newest is None:
            raise UsageError(f"no snapshots in {config.backup.dir}; give a snapshot file")
        return Path(newest.path), Recorded.from_sidecar(newest.to_json(), f"{newest.path}.json")
    path = Path(ref)
    if not path.is_file():
        path = config.backup.dir / ref
        if not path.is_file():
            raise UsageError(f"snapshot {ref!r}: no such file, and no snapshot of that name in {config.backup.dir}")
    return path, catalog_record(path)


def _restore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT",
                   help="snapshot file, a name in the local store, or 'latest'")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print every step that would run; change nothing")
    mode.add_argument("--yes", action="store_true", help="run the restore")
    p.add_argument("--op", metavar="OP", help="operation id (to resume an interrupted restore; default: new)")
    p.add_argument("--force", action="store_true",
                   help="restore a snapshot taken from another cluster (moving a cluster to new hardware); "
                        "overrides only that refusal")
    _json_flag(p)


def _plan_json(params: RestoreParams, steps: list[PlannedStep], checks: list[str],
               refusals: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "op": params.op, "params": params.to_json(), "checks": checks, "refusals": refusals,
        "steps": [{"step": s.step, "destructive": s.destructive, "what": s.what} for s in steps]}
    if refusals:
        out.update(error="; ".join(refusals), exit=EXIT_UNSAFE)
    return out


@command("restore", "restore this single-member cluster from a snapshot (--plan or --yes)", _restore_args)
def cmd_restore(args: argparse.Namespace) -> int:
    from etcdguard.common.journal import check_op_id

    if not args.plan and not args.yes:
        raise UsageError("restore needs --plan (show what would happen) or --yes (do it)")
    from etcdguard.agent.restore.node import kept_dirs
    from etcdguard.agent.restore.opening import make_params
    from etcdguard.agent.restore.plan import build_plan, render_plan
    from etcdguard.agent.restore.records import params_of

    config = load_config(args)
    assert config is not None
    engine = _engine(config, quiet=False)
    params: RestoreParams
    recorded: Optional[Recorded] = None
    op_id = check_op_id(args.op) if args.op else None
    existing = op_id is not None and engine.ops.get(op_id).exists()
    if existing:
        assert op_id is not None
        params = params_of(engine.ops.get(op_id).log().record)
        if args.snapshot and resolve_snapshot(config, args.snapshot)[0].resolve() != Path(params.snapshot):
            raise UsageError(f"operation {op_id} restores {params.snapshot}, not {args.snapshot}")
    else:
        if not args.snapshot:
            raise UsageError("give the SNAPSHOT to restore (or --op OP of an existing operation)")
        path, recorded = resolve_snapshot(config, args.snapshot)
        params = make_params(config, engine.member, engine.tool, path, op_id, recorded=recorded)
    if args.plan:
        api = engine.runtime.apiserver
        steps = build_plan(params, engine.runtime.etcd.describe(), api.describe() if api else None)
        checks: list[str] = []
        refusals: list[str] = []
        if existing:
            try:
                checks = engine.reverify(engine.ops.get(params.op).log())
            except UnsafeRefusal as exc:
                refusals = [str(exc)]
        else:
            local = engine.local_checks(params, recorded, args.force)
            checks, refusals = local.checks, local.refusals
        runtimes = tuple(s.describe() for s in (engine.runtime.etcd, api) if s is not None)
        text = render_plan(params, steps, runtimes, checks, refusals)
        emit(args, _plan_json(params, steps, checks, refusals), text)
        if refusals and not args.json:
            print(f"{PROG}: error: {'; '.join(refusals)}", file=sys.stderr)
        return EXIT_UNSAFE if refusals else EXIT_OK
    outcome = engine.run(params, recorded=recorded, force=args.force)
    kept = kept_dirs(Path(params.data_dir), params.op)
    emit(args, {**outcome.to_json(), "kept": [{"path": p, "bytes": b} for p, b in kept]},
         f"restore {params.op} done: member {params.name} serves the snapshot's data "
         f"(revision >= {params.expected_min_revision})\n"
         + "".join(f"  kept: {p} ({format_bytes(b)})\n" for p, b in kept)
         + f"  roll back with: etcdguard-agent rollback {params.op}\n"
         f"  delete kept data with: etcdguard-agent cleanup {params.op} --yes")
    return EXIT_OK


def _op_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("op", metavar="OP", help="operation id (see `etcdguard-agent restores`)")
    _json_flag(p)


def _rollback_args(p: argparse.ArgumentParser) -> None:
    _op_args(p)
    p.add_argument("--yes", action="store_true",
                   help="roll back even though the restore was unfenced (revisions go backwards)")


@command("rollback", "put back the data a finished restore set aside", _rollback_args)
def cmd_rollback(args: argparse.Namespace) -> int:
    from etcdguard.common.journal import check_op_id

    config = load_config(args)
    assert config is not None
    engine = _engine(config, quiet=args.json)
    op_id = check_op_id(args.op)
    op = engine.ops.get(op_id)
    risk = engine.backwards_risk(op.log()) if op.exists() else None
    if risk is not None and args.yes:
        print(f"{PROG}: warning: {risk}; rolling back anyway (--yes)", file=sys.stderr)
    outcome = engine.rollback(op_id, backwards_ok=args.yes)
    emit(args, {**outcome.to_json(), "revisions_backwards": risk is not None},
         f"rolled back {args.op}: the pre-restore data is live again"
         + ("\n  revisions went backwards: restart kube-apiserver, kube-controller-manager and "
            "kube-scheduler so that their caches re-list" if risk is not None else ""))
    return EXIT_OK


def _cleanup_args(p: argparse.ArgumentParser) -> None:
    _op_args(p)
    p.add_argument("--yes", action="store_true", help="really delete (without it: show what would go)")


@command("cleanup", "delete the data one finished operation kept (only with --yes)", _cleanup_args)
def cmd_cleanup(args: argparse.Namespace) -> int:
    from etcdguard.agent.restore.node import kept_dirs
    from etcdguard.agent.restore.records import params_of
    from etcdguard.common.journal import check_op_id

    config = load_config(args)
    assert config is not None
    op_id = check_op_id(args.op)
    engine = _engine(config, quiet=True)
    params = params_of(engine.ops.get(op_id).log().record)
    kept = kept_dirs(Path(params.data_dir), op_id)
    if not args.yes:
        emit(args, {"op": op_id, "would_delete": [{"path": p, "bytes": b} for p, b in kept]},
             "would delete:\n" + "".join(f"  {p} ({format_bytes(b)})\n" for p, b in kept)
             + "run again with --yes to delete")
        return EXIT_OK
    removed = engine.cleanup(op_id)
    emit(args, {"op": op_id, "deleted": removed}, "deleted:\n" + "".join(f"  {p}\n" for p in removed))
    return EXIT_OK


@command("restores", "list restore operations on this node and the data they keep", _json_flag)
def cmd_restores(args: argparse.Namespace) -> int:
    from etcdguard.agent.restore.node import kept_dirs
    from etcdguard.agent.restore.records import OperationStore

    config = load_config(args)
    assert config is not None
    rows: list[dict[str, Any]] = []
    for s in OperationStore(config.state.dir).summaries():
        kept = kept_dirs(Path(s.params.get("data_dir", "/nonexistent")), s.op,
                         Path(s.params["wal_dir"]) if s.params.get("wal_dir") else None)
        rows.append({**s.to_json(), "kept": [{"path": p, "bytes": b} for p, b in kept]})
    if args.json:
        emit(args, rows, "")
        return EXIT_OK
    if not rows:
        print("no restore operations on this node")
    for r in rows:
        created = r["created_at"]
        age = f"{format_duration(time.time() - created)} ago" if isinstance(created, (int, float)) else "-"
        print(f"{r['op']}  {r['state']:<22} {age}  {r['snapshot'] or '-'}")
        if r["state"] == "damaged":
            print(f"    {r['error']}")
        elif r["error"]:
            print(f"    failed at {r['failed_step']}: {r['error']}")
        for k in r["kept"]:
            print(f"    kept {k['path']} ({format_bytes(k['bytes'])})")
    return EXIT_OK
