"""`etcdguard-agent check`: a list of typed results; a check never changes anything."""

from __future__ import annotations

from typing import Optional

from etcdguard.agent.config import AgentConfig
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.checks import CheckResult, readable_problem, writable_dir
from etcdguard.common.etcd.client import EtcdClient
from etcdguard.common.snapshot.tools import find_tool, tool_kind, untested_version


def run_checks(config: AgentConfig, member: LocalMember) -> list[CheckResult]:
    results: list[CheckResult] = []
    for label, path in (("cacert", member.tls.cacert), ("cert", member.tls.cert), ("key", member.tls.key)):
        if path is None:
            continue
        problem = readable_problem(path)
        results.append(CheckResult(
            f"tls {label}", problem is None, f"{path} {problem or 'readable'}",
            "" if problem is None else f"fix the file or set etcd.{label} in {config.source}",
        ))
    results.append(_etcd_check(member, config))
    results.append(_data_dir_check(config, member))
    results.append(_tool_check(config))
    for label, key, path in (("backup dir", "backup.dir", config.backup.dir),
                             ("state dir", "state.dir", config.state.dir)):
        ok, detail = writable_dir(path)
        results.append(CheckResult(label, ok, detail, "" if ok else (
            f"run as the agent's user (root), fix the permissions, or set {key} in {config.source}")))
    clock = _clock_check(config)
    if clock is not None:
        results.append(clock)
    results.append(_records_check(config))
    results.append(_server_check(config))
    results.append(_bundle_check(config))
    if config.apiserver is not None and config.apiserver.manifest is not None:
        present = config.apiserver.manifest.exists()
        results.append(CheckResult("apiserver manifest", present, str(config.apiserver.manifest),
                                   "" if present else "set apiserver.manifest, or remove [apiserver]"))
    return results


def _etcd_check(member: LocalMember, config: AgentConfig) -> CheckResult:
    """etcd answers, is healthy, and runs a version the project tests (another one is a warning)."""
    try:
        with EtcdClient(member.endpoint, member.tls, config.etcd.dial_timeout) as client:
            st = client.status()
    except EtcdguardError as exc:
        return CheckResult("etcd", False, str(exc), "is etcd running? are etcd.endpoints and the TLS files right?")
    if not st.healthy:
        why = "; ".join(st.errors) or "no leader"
        return CheckResult("etcd", False, f"{member.endpoint}: unhealthy: {why}",
                           "look at the etcd logs and `etcdctl endpoint status --cluster`")
    detail = (f"{member.endpoint}: etcd {st.version}, revision {st.revision}, "
              f"{'leader' if st.is_leader else 'follower'}, db {st.db_size} bytes")
    untested = untested_version(st.version)
    if untested is not None:
        return CheckResult("etcd", True, f"{detail}; {untested}", UNTESTED_HINT, warning=True)
    return CheckResult("etcd", True, detail)


UNTESTED_HINT = "backups and restores are expected to work; see docs/install.md for what was tested"


def _tool_check(config: AgentConfig) -> CheckResult:
    """The tool that reads and restores snapshots: found, etcdutl wherever one is present, a tested version."""
    try:
        tool = find_tool(config.etcd.restore_tool)
    except EtcdguardError as exc:
        return CheckResult("restore tool", False, str(exc),
                           "install etcdutl (etcd >= 3.5) or etcdctl (etcd 3.4), or set etcd.restore_tool")
    detail = (f"{tool.path} ({tool.kind} {tool.version}"
              + (", supports --bump-revision)" if tool.supports_bump else ", no --bump-revision)"))
    notes, hints = [], []
    configured = config.etcd.restore_tool
    if configured is not None and configured != tool.path and tool_kind(configured) == "etcdctl":
        notes.append(f"used instead of the configured etcdctl {configured}")
        hints.append(f"set etcd.restore_tool to {tool.path} in {config.source}")
    untested = untested_version(tool.version)
    if untested is not None:
        notes.append(untested)
        hints.append(UNTESTED_HINT)
    return CheckResult("restore tool", True, "; ".join([detail, *notes]), "; ".join(hints), warning=bool(notes))


def _data_dir_check(config: AgentConfig, member: LocalMember) -> CheckResult:
    db = member.data_dir / "member" / "snap" / "db"
    try:
        if not member.data_dir.is_dir():
            return CheckResult("data dir", False, f"{member.data_dir} does not exist",
                               f"set etcd.data_dir in {config.source}")
        if not db.exists():
            return CheckResult("data dir", False, f"{member.data_dir} has no member/snap/db",
                               "is this really the member's data dir?")
    except PermissionError:
        return CheckResult("data dir", False, f"{member.data_dir} cannot be looked into by this user "
                           "(permission denied)", "run check as the agent's user (root): a restore swaps "
                           "this directory's contents")
    return CheckResult("data dir", True, f"{member.data_dir} (member/snap/db present)")


def _clock_check(config: AgentConfig) -> Optional[CheckResult]:
    """Snapshots stamped in the future mean the clock was stepped back (or was wrong when they were taken)."""
    import time

    from etcdguard.agent.snapshots.store import SnapshotStore
    from etcdguard.common.base.durations import format_duration
    from etcdguard.common.base.schedule import CLOCK_TOLERANCE

    try:
        metas = SnapshotStore(config.backup.dir).list()
    except EtcdguardError:
        return None   # the backup dir check says why
    now = time.time()
    ahead = [m for m in metas if m.created_unix > now + CLOCK_TOLERANCE]
    if not ahead:
        return CheckResult("clock", True, f"no snapshot in {config.backup.dir} is stamped in the future")
    worst = max(m.created_unix for m in ahead) - now
    names = ", ".join(m.name for m in ahead[:3]) + (", ..." if len(ahead) > 3 else "")
    return CheckResult("clock", False, f"{len(ahead)} snapshot(s) are stamped up to {format_duration(worst)} in "
                       f"the future ({names}): this clock was stepped back since they were taken",
                       "fix the time (chrony/timesyncd); newest and retention go by revision meanwhile, and "
                       "the backup age by the monotonic clock")


def _records_check(config: AgentConfig) -> CheckResult:
    """Restore records that cannot be read block backups and restores here: say which, and what to do."""
    from etcdguard.agent.restore.records import OperationStore

    ops = OperationStore(config.state.dir)
    try:
        count = len(ops.all())
        damaged = ops.damaged()
    except EtcdguardError as exc:
        return CheckResult("restore records", False, str(exc),
                           f"run as the agent's user (root), or fix the permissions of {config.state.dir}")
    if damaged:
        return CheckResult("restore records", False, "; ".join(why for _, why in damaged),
                           "look at the operation's journal.jsonl to see what it did and whether etcd serves the "
                           "data you expect; then repair op.json or move its directory out of {ops.root}")
    return CheckResult("restore records", True, f"{count} operation record(s) in {ops.root}, all readable")


def _bundle_check(config: AgentConfig) -> CheckResult:
    """What the node bundle will hold, and whether it can leave the node (only encrypted)."""
    from etcdguard.agent.snapshots.bundle import present
    from etcdguard.common.base.agekeys import AgeError, find_age

    b = config.bundle
    if not b.enabled:
        return CheckResult("node bundle", True, "disabled ([bundle] enabled = false)")
    found = present(b.paths)
    holds = ", ".join(map(str, found)) if found else "nothing (none of the paths exists here)"
    if not b.encrypt_to:
        return CheckResult("node bundle", True, f"holds {holds}; NOT encrypted: it stays on this node (0600) and "
                           "the vault gets none", f"set [bundle] encrypt_to in {config.source} to the vault's "
                           "age recipient(s)", warning=True)
    try:
        find_age()
    except AgeError as exc:
        return CheckResult("node bundle", False, str(exc), "install the age package")
    return CheckResult("node bundle", True, f"holds {holds}; age-encrypted to {len(b.encrypt_to)} recipient(s)")


def _server_check(config: AgentConfig) -> CheckResult:
    """The control server's keys load exactly as the daemon will load them."""
    from etcdguard.agent.control.auth import load_authorized
    from etcdguard.common.wire import keys

    s = config.server
    if not s.enabled:
        return CheckResult("control server", True, "disabled ([server] enabled = false)")
    if s.insecure:
        return CheckResult("control server", True, f"{s.listen}: plain TCP (insecure = true): no authentication")
    hint = "create keys with `etcdguardctl keygen NAME --dir DIR` (see docs/coordinator.md)"
    if s.secret_key is None or s.authorized_keys is None:
        return CheckResult("control server", False, "server.secret_key and server.authorized_keys must be set", hint)
    try:
        public, _ = keys.load_keypair(s.secret_key, "server.secret_key")
        authorized = load_authorized(s.authorized_keys, "server.authorized_keys")
    except EtcdguardError as exc:
        return CheckResult("control server", False, str(exc), hint)
    if not authorized:
        return CheckResult("control server", False,
                           f"{s.authorized_keys} holds no coordinator .key file: no coordinator can connect",
                           "copy the coordinator's public key there")
    return CheckResult("control server", True,
                       f"{s.listen}: CURVE, agent key {keys.fingerprint(public)}, "
                       f"{len(authorized)} authorized coordinator key(s)")
