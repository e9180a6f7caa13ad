"""etcdguardctl: the operator's tool. Talks to the coordinator daemon over its control socket.

The daemon does the work (a dropped ssh session does not abandon a backup);
this tool only sends the request, shows progress on stderr and renders the
result. ``keygen`` is the exception: it works alone, without a config or a
daemon, because keys are made before either exists.

Exit codes: 0 ok, 1 operation failed, 2 usage or config error, 3 refused as unsafe.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from etcdguard.common.base.clikit import CommandLine, table
from etcdguard.common.base.durations import format_bytes, format_duration, stamp_times
from etcdguard.common.base.errors import EXIT_OK, EtcdguardError, UsageError
from etcdguard.coordinator.config import DEFAULT_CONFIG_PATH, CoordinatorConfig, load_coordinator_config
from etcdguard.coordinator.control import server as control

PROG = "etcdguardctl"
DEFAULT_KEY_DIR = Path("/etc/etcdguard/keys")
log = logging.getLogger(__name__)

CLI = CommandLine(
    PROG, "etcdguard control: the coordinator's vault, members and keys.", DEFAULT_CONFIG_PATH,
    epilog="Exit codes: 0 ok, 1 operation failed, 2 usage or config error, 3 refused as unsafe.",
    interrupted="interrupted (a backup already started goes on in the daemon)",
)
command = CLI.command


def load_config(args: argparse.Namespace) -> CoordinatorConfig:
    return load_coordinator_config(args.config or DEFAULT_CONFIG_PATH)


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(stamp_times(obj), indent=2, sort_keys=True))
    elif text:
        print(text)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def ask(args: argparse.Namespace, cmd: str, cmd_args: Optional[dict[str, Any]] = None,
        on_progress: Optional[Callable[[dict[str, Any]], None]] = None) -> Any:
    config = load_config(args)
    return control.request(config.coordinator.control_socket, cmd, cmd_args, on_progress=on_progress,
                           idle_timeout=config.coordinator.control_timeout)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{format_duration(float(seconds))} ago"


_table = table   # the one table layout of every etcdguard command (agent/base/clikit.py)


# -- status ------------------------------------------------------------------
@command("status", "each member's agent, etcd health, role, revision and newest backup; the vault's newest",
         _json_flag)
def cmd_status(args: argparse.Namespace) -> int:
    report = ask(args, "status")
    if args.json:
        emit(args, report, "")
        return EXIT_OK
    lines = [*_member_lines(report["members"]), "", *_quorum_lines(report["cluster"]), _cluster_line(report["cluster"]),
             *_vault_lines(report["vault"]), *_prestage_lines(report["vault"].get("prestage")),
             *_restore_lines(report.get("restores") or {}), *continuous_lines(report.get("continuous")),
             *drill_lines(report.get("drills")),
             *_coordinator_lines(report["coordinator"])]
    print("\n".join(lines))
    return EXIT_OK


# the ETCD column by member state (coordinator/agents/quorum.py's MemberState)
_STATE_WORDS = {"healthy": "healthy", "unhealthy": "UNHEALTHY", "no-leader": "NO LEADER", "no-quorum": "NO QUORUM",
                "down": "DOWN", "not-measured": "NOT MEASURED"}


def _member_row(m: dict[str, Any]) -> list[str]:
    if not m["reachable"]:
        return [m["member"], m["agent"], "no", "-", "-", "-", "-"]
    etcd = m.get("etcd") or {}
    state = m.get("state") or ("healthy" if m["healthy"] else "unhealthy")   # a daemon before states sends none
    health = _STATE_WORDS.get(state, state.upper())
    role = "leader" if m["is_leader"] else ("follower" if m["healthy"] else "-")
    newest = m.get("newest_backup")
    backup = "none" if not newest else f"{_age(newest.get('age_seconds'))} (rev {newest.get('revision')})"
    busy = f" [busy: {m['busy']}]" if m.get("busy") else ""
    version = f" {etcd.get('version')}" if etcd.get("version") else ""
    return [m["member"], m["agent"], "yes", health + version, role,
            str(m.get("revision") if m.get("revision") is not None else "-"), backup + busy]


def _member_lines(members: list[dict[str, Any]]) -> list[str]:
    """The members' table, then a line for each member that is unreachable or unhealthy."""
    rows = [["MEMBER", "AGENT", "REACHABLE", "ETCD", "ROLE", "REVISION", "NEWEST BACKUP"]]
    rows += [_member_row(m) for m in members]
    lines = [_table(rows)]
    for m in members:
        if not m["reachable"]:
            lines.append(f"  {m['member']}: {m['error']}")
        elif not m["healthy"]:
            lines.append(f"  {m['member']}: etcd: {(m.get('etcd') or {}).get('error') or 'not healthy'}")
    return lines


def _quorum_lines(c: dict[str, Any]) -> list[str]:
    """The quorum's one sentence ("quorum lost: m2, m3 down; m1 up without a leader")."""
    quorum = c.get("quorum") or {}
    return [quorum["sentence"]] if quorum.get("sentence") else []


def _cluster_line(c: dict[str, Any]) -> str:
    ids = c["cluster_ids"]
    cluster = (f"cluster id {ids[0]}" if len(ids) == 1 else
               "cluster id unknown" if not ids else f"MEMBERS DISAGREE on the cluster id: {', '.join(ids)}")
    if len(c["leaders"]) > 1 or len(c["leader_ids"]) > 1:
        leader = ("MEMBERS DISAGREE on the leader: "
                  + ", ".join(c["leaders"] or c["leader_ids"]))
    elif c["leader"]:
        leader = f"leader {c['leader']}"
    elif c["leader_id"]:
        leader = f"leader is member id {c['leader_id']} (its agent did not answer)"
    else:
        leader = "NO LEADER"
    return f"{cluster}; {leader}; {c['reachable']}/{c['members']} agents reachable, {c['healthy']} healthy"


def _vault_lines(v: dict[str, Any]) -> list[str]:
    """The vault's lines: its last listing, and when that listing is not today's answer, why."""
    listing = v.get("listing") or {"state": "failed" if v.get("error") else "ok"}
    state = listing.get("state")
    lines = []
    if state == "failed":
        lines.append(f"vault: LISTING FAILED {_age(_since(listing, 'failed_at'))}: {v['error']}")
    if state == "pending":
        lines.append(f"vault: not listed yet since the coordinator started (asking {v['dir']} for "
                     f"{format_duration(float(listing.get('asking_seconds') or 0))})")
        return lines
    if state == "failed" and listing.get("listed_at") is None:
        lines.append(f"vault: no listing of {v['dir']} has answered since the coordinator started: its contents "
                     "are unknown")
        return lines
    held = f"as last listed {_age(listing.get('age_seconds'))}, " if state == "failed" else ""
    newest = v.get("newest")
    if newest:
        stored = v.get("stored_bytes")
        kept = f" (stored as {format_bytes(stored)})" if stored and stored != v["bytes"] else ""
        lines.append(f"vault: {held}{v['count']} snapshot(s), {format_bytes(v['bytes'])}{kept} in {v['dir']}; newest "
                     f"{newest['sha256'][:12]} from {newest['member']}, revision {newest['revision']}, "
                     f"taken {_age(v.get('newest_age_seconds'))}")
    else:
        lines.append(f"vault: {held}empty ({v['dir']})")
    return lines


def _prestage_lines(p: Optional[dict[str, Any]]) -> list[str]:
    """Which members hold the vault's newest snapshot ahead of a restore."""
    if not p or not p.get("newest"):
        return []
    if not p.get("enabled"):
        return ["pre-staging: off ([restore] prestage = false): a restore sends the snapshot at restore time"]
    parts = []
    for member, s in sorted((p.get("members") or {}).items()):
        parts.append(f"{member} yes" + (" (restored ahead)" if s.get("warm") else "") if s.get("holds_newest") else
                     f"{member} no" + (f" ({s['error']})" if s.get("error") else " (not yet)"))
    return [f"newest snapshot {p['newest'][:12]} pre-staged on: {', '.join(parts) or 'no member yet'}"]


def window_phrase(c: dict[str, Any]) -> str:
    """"any point from 2026-12-05T14:00:00Z to 12s ago (revisions 80..88211); gaps: none"."""
    now = float(c.get("now_unix") or c.get("now") or time.time())
    spans = c.get("window") or []
    if not spans:
        return "no point-in-time window yet (it starts with the first full snapshot after the capture began)"
    parts = []
    for w in spans:
        ago = max(0.0, now - float(w["last_unix"]))
        end = f"{format_duration(ago)} ago" if ago < 3600 else str(w["last_at"])
        parts.append(f"any point from {w['first_at']} to {end} (revisions {w['first_revision']}.."
                     f"{w['last_revision']}{'' if len(spans) == 1 else ', cluster ' + w['cluster_id']})")
    gaps = c.get("gaps") or []
    gap_text = ", ".join(f"revisions {g['first_revision']}..{g['last_revision']} (found {g['found_at']})"
                         for g in gaps)
    return "; ".join(parts) + f"; gaps: {gap_text or 'none'}"


def continuous_lines(c: Optional[dict[str, Any]]) -> list[str]:
    """Continuous backup in status: what the capture does, its lag, the window."""
    if not c:
        return []
    if not c.get("enabled"):
        return ["continuous backup: off ([continuous] enabled = false); restores go back to a full snapshot"]
    if c.get("running"):
        doing = f"capturing on member {c.get('member')}, lag {format_duration(float(c.get('lag_seconds') or 0))}"
    else:
        doing = f"NOT RUNNING: {c.get('doing')}"
        if c.get("error"):
            doing += f" (last error {_age(_since(c, 'error_at'))}: {c['error']})"
    return [f"continuous backup: {doing}", f"  {window_phrase(c)}"]


def _since(d: dict[str, Any], key: str) -> Optional[float]:
    """Seconds since the time ``d[key]`` (unix seconds, or stamped: ISO with ``*_unix`` beside it)."""
    unix = d.get(f"{key[:-3]}_unix", d.get(key))
    return max(0.0, time.time() - float(unix)) if isinstance(unix, (int, float)) else None


def drill_lines(d: Optional[dict[str, Any]]) -> list[str]:
    """Whether restore drills run, when one last proved a snapshot restorable, and a failed last one."""
    if not d:
        return []   # a daemon from before drills
    parts = [f"drills: {d['state']}"]
    last = d.get("last")
    success = _since(d, "last_success_at")
    if last and last.get("ok"):
        parts.append(f"last passed {_age(_since(last, 'started_at'))} ({last['sha256'][:12]}, revision "
                     f"{last['revision']}, {format_duration(float(last['seconds']))})")
    elif success is not None:
        parts.append(f"last passed {_age(success)}")
    elif d.get("enabled"):
        parts.append("no drill has passed yet")
    if d.get("running"):
        parts.append(f"running: {d['running']}")
    elif d.get("next_in_seconds") is not None:
        parts.append(f"next in {format_duration(float(d['next_in_seconds']))}")
    lines = ["; ".join(parts)]
    if last and not last.get("ok"):
        lines.append(f"drills: LAST DRILL FAILED {_age(_since(last, 'started_at'))} on {last['sha256'][:12]} "
                     f"(reason {last.get('reason')}): {last.get('message')}")
    return lines


def _restore_lines(restores: dict[str, Any]) -> list[str]:
    lines = []
    running = restores.get("running")
    if running:
        command = running.get("command") or "restore"
        lines.append(f"{command} {running['op']} running: {running['doing']} "
                     f"(follow it: etcdguardctl {command} --attach {running['op']})")
    for w in restores.get("waiting") or []:
        command = w.get("command") or "restore"
        lines.append(f"{command} {w['op']} is {w['state'].upper()} (last phase {w['phase']}): resume with "
                     f"`etcdguardctl {command} --resume {w['op']}` or roll back with `--rollback {w['op']}`")
    lines += [f"restore journal problem: {problem}" for problem in restores.get("damaged") or []]
    lines += [f"restore {o['op']} is open on {', '.join(o['members'])} and this coordinator has no journal of it: "
              f"end it with `etcdguardctl restore --rollback {o['op']}`" for o in restores.get("orphaned") or []]
    return lines


def _coordinator_lines(co: dict[str, Any]) -> list[str]:
    """What the coordinator does, when it pulls next, and how the last copy went: a failed copy (a
    backup's or a pull's) is shown, with its reason, until a copy succeeds."""
    parts = []
    if co.get("busy"):
        parts.append(f"busy: {co['busy']}")
    failed = co.get("last_failure")
    if co.get("next_pull_in_seconds") is not None:
        retry = " (a retry of the failed copy)" if failed else ""
        parts.append(f"next pull in {format_duration(co['next_pull_in_seconds'])}{retry}")
    last = co.get("last_pull")
    if last and not failed:
        parts.append(f"last pull ok: {last.get('message')}")
    lines = ["coordinator: " + "; ".join(parts)] if parts else []
    if failed:
        count = int(co.get("failures_in_a_row") or 1)
        since = (f"; {count} failed in a row since {_age(_since(co, 'failing_since_at'))}" if count > 1 else "")
        lines.append(f"coordinator: last copy FAILED {_age(_since(failed, 'at'))} ({failed.get('kind')}, reason "
                     f"{failed.get('reason')}){since}: {failed.get('message')}")
    return lines


# -- snapshots -----------------------------------------------------------------
@command("snapshots", "list the snapshots in the vault, newest first", _json_flag)
def cmd_snapshots(args: argparse.Namespace) -> int:
    reply = stamp_times(ask(args, "snapshots"))
    entries = reply["entries"] if isinstance(reply, dict) else reply   # a daemon from before the catalog: a list
    listing = reply.get("listing") or {} if isinstance(reply, dict) else {}
    _listing_warning(listing, str(reply.get("location") if isinstance(reply, dict) else "the vault"))
    if args.json:
        emit(args, entries, "")
        return EXIT_OK
    if not entries:
        print("the vault is empty (take one with `etcdguardctl backup`)" if listing.get("state") != "failed" else
              f"the vault was empty at its last listing, {_age(listing.get('age_seconds'))}")
        return EXIT_OK
    now = time.time()
    rows = [["ID", "KIND", "TAKEN", "AGE", "SIZE", "STORED", "REVISION", "MEMBER", "ETCD", "BUNDLE", "PINNED",
             "PROVEN"]]
    for e in entries:
        rows.append([e["sha256"][:12], e.get("kind") or "-", e["created_at"],
                     format_duration(max(0.0, now - e["created_unix"])), format_bytes(e["size"]), _stored(e),
                     str(e["revision"]), e["member"], e["etcd_version"] or "-", "yes" if e.get("bundle") else "-",
                     e.get("pinned") or "-", _proven(e)])
    print(_table(rows))
    continuous = reply.get("continuous") if isinstance(reply, dict) else None
    if continuous and continuous.get("enabled"):
        print(f"point in time: {window_phrase(continuous)}")
    return EXIT_OK


def _stored(e: dict[str, Any]) -> str:
    """The bytes the vault holds for an entry (compressed, encrypted), as it stores them."""
    stored = e.get("stored_size")
    if not stored:
        return "-"
    how = [w for w, on in (("zstd", e.get("compression") == "zstd"), ("age", e.get("encrypted"))) if on]
    return format_bytes(stored) + (f" ({'+'.join(how)})" if how else "")


def _proven(e: dict[str, Any]) -> str:
    """When a restore drill last proved the entry restorable; a failed last drill says so first."""
    drill = e.get("drill") or {}
    proven = _since(e, "proven_at")
    when = f"{_age(proven)}" if proven is not None else ""
    if drill and not drill.get("ok"):
        return f"FAILED ({drill.get('reason')})" + (f", before: {when}" if when else "")
    return when or "-"


def _listing_warning(listing: dict[str, Any], location: str) -> None:
    """The listing ``snapshots`` answers from, when it is not a current one: on stderr, or as the error
    (exit 1) when no listing has answered since the coordinator started."""
    state = listing.get("state")
    if state == "pending":
        raise EtcdguardError(f"the vault {location} has not answered a listing yet since the coordinator started "
                             f"(asking for {format_duration(float(listing.get('asking_seconds') or 0))}); "
                             "try again, or see `etcdguardctl status`")
    if state != "failed":
        return
    if listing.get("listed_at") is None:
        raise EtcdguardError(f"the vault {location} cannot be listed: {listing.get('error')}; no listing has "
                             "answered since the coordinator started")
    print(f"warning: listing the vault failed {_age(_since(listing, 'failed_at'))}: {listing.get('error')}",
          file=sys.stderr)
    print(f"warning: this is the vault as last listed, {_age(listing.get('age_seconds'))} "
          f"({listing.get('listed_at')})", file=sys.stderr)


# -- backup --------------------------------------------------------------------
def _backup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", metavar="NAME", help="the member to take it on (default: a healthy follower)")
    _json_flag(p)


class ProgressPrinter:
    """Progress on stderr: one updating line on a terminal, a line per 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last_step = -1
        self._open = False

    def __call__(self, p: dict[str, Any]) -> None:
        if "bytes" in p and "total" in p:
            done, total = int(p["bytes"]), max(1, int(p["total"]))
            pct = 100 * done // total
            text = f"{p.get('member', '')}: {format_bytes(done)} / {format_bytes(total)} ({pct}%)"
            if self.tty:
                sys.stderr.write(f"\r{text}   ")
                self._open = True
            elif pct // 10 != self._last_step or done >= total:
                self._last_step = pct // 10
                sys.stderr.write(text + "\n")
        elif p.get("message"):
            self.finish()
            sys.stderr.write(f"{p['message']}\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            self._open = False


@command("backup", "take a snapshot now on one member and pull it into the vault", _backup_args)
def cmd_backup(args: argparse.Namespace) -> int:
    if args.member is not None and not args.member:
        raise UsageError("--member: give a member name")
    printer = ProgressPrinter()
    try:
        result = ask(args, "backup", {"member": args.member} if args.member else {}, on_progress=printer)
    finally:
        printer.finish()
    e = result["entry"]
    took = float(result.get("duration_seconds") or 0)
    earlier = "" if result["pulled"] else (f" (the same data as a snapshot stored earlier from {e['member']}: "
                                           "same cluster, same revision)")
    emit(args, result,
         f"{'pulled' if result['pulled'] else 'already in the vault:'} {e['sha256'][:12]} from member "
         f"{result['member']}{earlier}: {format_bytes(e['size'])}, revision {e['revision']}, "
         f"taken {e['created_at']}\n"
         f"  vault {'file ' + e['path'] if e.get('path') else 'object'} (sha256 {e['sha256']}, checked end to "
         f"end{', age-encrypted' if e.get('encrypted') else ''}; {format_duration(took)})")
    return EXIT_OK


# -- keygen --------------------------------------------------------------------
def _keygen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="key name: NAME.key (public) and NAME.key_secret are written")
    p.add_argument("--dir", type=Path, default=DEFAULT_KEY_DIR, metavar="DIR",
                   help=f"where to write them (default {DEFAULT_KEY_DIR}; created 0700 if missing)")
    _json_flag(p)


@command("keygen", "make a CURVE keypair: NAME.key (public, to distribute) and NAME.key_secret (0600)",
         _keygen_args)
def cmd_keygen(args: argparse.Namespace) -> int:
    """Needs neither a config nor a daemon: keys come first. Never overwrites a key."""
    from etcdguard.common.wire import keys

    directory: Path = args.dir
    try:
        public_path, secret_path = keys.generate(args.name, directory)
    except PermissionError as exc:
        raise EtcdguardError(f"cannot write keys in {directory}: permission denied ({exc.filename})") from None
    except OSError as exc:
        raise EtcdguardError(f"cannot write keys in {directory}: {exc.strerror or exc}") from None
    public = keys.load_public(public_path).decode("ascii")
    emit(args, {"name": args.name, "public_key": str(public_path), "secret_key": str(secret_path),
                "public": public},
         f"wrote {public_path} (public) and {secret_path} (secret, 0600)\n"
         f"  public key {public}\n"
         "  An agent's NAME.key goes to the coordinator host ([[members]] public_key); the coordinator's\n"
         "  NAME.key goes into every agent's authorized_keys directory. The secret stays on this host.")
    return EXIT_OK


