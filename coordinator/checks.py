"""`etcdguard-coordinator check`: the coordinator's setup as a list of typed results.

Like ``etcdguard-agent check`` (common/checks.py holds the CheckResult both share):
a check never changes anything, a problem is a failed result with a hint, and
the command exits 1 when any check failed. A config that cannot be read at all
is exit 2 before any check runs. What is checked, in order: the keys (the
coordinator's secret key and its mode, each member's agent public key), the
state directory, the control socket's directory, the vault backend (opened as
the daemon opens it, and listed: for S3 that is a bucket listing with the
configured credentials), whether restore drills can run on this host (a
scratch etcd), and each agent (ping, then status, over CURVE).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import stat
from typing import Optional

from etcdguard.common import __version__
from etcdguard.common.base.errors import EtcdguardError
from etcdguard.common.checks import CheckResult, writable_dir
from etcdguard.common.wire.report import AgentReport
from etcdguard.coordinator.config import CoordinatorConfig, Keys, MemberSettings

KEY_HINT = "make keys with `etcdguardctl keygen NAME --dir DIR` (docs/security.md)"


def run_checks(config: CoordinatorConfig) -> list[CheckResult]:
    results: list[CheckResult] = []
    keys = _key_checks(config, results)
    results.append(_state_dir_check(config))
    results.append(_socket_check(config))
    results.append(_vault_check(config))
    results.append(drill_check(config))
    results.extend(_agent_checks(config, keys))
    return results


def _key_checks(config: CoordinatorConfig, results: list[CheckResult]) -> Optional[Keys]:
    """One result for the coordinator's key pair and one per member's key; the keys if all loaded."""
    from etcdguard.common.wire import keys as wire_keys

    if not config.members:
        results.append(CheckResult("members", False, f"{config.source} has no [[members]]",
                                   "add one [[members]] table (name, agent, public_key) per etcd member"))
    if config.coordinator.insecure:
        results.append(CheckResult("keys", True, "insecure = true: plain TCP to the agents, no keys",
                                   "use CURVE keys outside test setups", warning=True))
        return Keys(None, None, {m.name: None for m in config.members})
    ok = True
    public = secret = None
    path = config.coordinator.secret_key
    try:
        assert path is not None
        public, secret = wire_keys.load_keypair(path, f"{config.source}: coordinator.secret_key")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        results.append(CheckResult("coordinator key", True, f"{path} (mode {mode:04o}), public key "
                                   f"{wire_keys.fingerprint(public)}"))
    except EtcdguardError as exc:
        ok = False
        results.append(CheckResult("coordinator key", False, str(exc), KEY_HINT))
    members: dict[str, Optional[bytes]] = {}
    for index, m in enumerate(config.members):
        try:
            assert m.public_key is not None
            members[m.name] = wire_keys.load_public(m.public_key, f"{config.source}: members[{index}].public_key")
            results.append(CheckResult(f"key {m.name}", True, f"{m.public_key}: agent key "
                                       f"{wire_keys.fingerprint(members[m.name] or b'')}"))
        except EtcdguardError as exc:
            ok = False
            results.append(CheckResult(f"key {m.name}", False, str(exc),
                                       "copy the agent's NAME.key (from `etcdguardctl keygen` on its node) here"))
    return Keys(public, secret, members) if ok else None


def _state_dir_check(config: CoordinatorConfig) -> CheckResult:
    state = config.coordinator.state_dir
    ok, detail = writable_dir(state)
    return CheckResult("state dir", ok, detail, "" if ok else f"fix coordinator.state_dir in {config.source}")


def _socket_check(config: CoordinatorConfig) -> CheckResult:
    from etcdguard.coordinator.control.server import check_socket_dir

    path = config.coordinator.control_socket
    hint = f"fix coordinator.control_socket in {config.source}, or the directory's owner and mode"
    parent = path.parent
    if not parent.exists():
        ok, detail = writable_dir(parent)
        return CheckResult("control socket", ok, f"{parent}: {'will be created (0750)' if ok else detail}",
                           "" if ok else hint)
    try:
        check_socket_dir(parent)
    except EtcdguardError as exc:
        return CheckResult("control socket", False, str(exc), hint)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        ok, detail = writable_dir(parent)
        return CheckResult("control socket", ok, f"{path}: {'free' if ok else detail}", "" if ok else hint)
    if not stat.S_ISSOCK(st.st_mode):
        return CheckResult("control socket", False, f"{path} exists and is not a socket", hint)
    state = "a coordinator daemon answers" if _answers(path) else "a stale socket (the daemon removes it at start)"
    return CheckResult("control socket", True, f"{path}: {state}")


def _answers(path: os.PathLike[str]) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _vault_check(config: CoordinatorConfig) -> CheckResult:
    from etcdguard.coordinator.vault.factory import open_vault

    v = config.vault
    where = f"s3 bucket {v.s3.bucket}" if v.backend == "s3" and v.s3 is not None else f"directory {v.dir}"
    try:
        vault = open_vault(config)
        entries = vault.list()
    except (EtcdguardError, OSError) as exc:
        return CheckResult("vault", False, f"{where}: {exc}", f"fix [vault] in {config.source} (docs/coordinator.md)")
    encrypted = f", age-encrypted to {len(v.encrypt_to)} recipient(s)" if v.encrypt_to else ""
    compressed = f", zstd level {v.compression_level}" if v.compression == "zstd" else ", uncompressed"
    return CheckResult("vault", True, f"{v.backend}: {where} lists {len(entries)} snapshot(s){compressed}{encrypted}")


def drill_check(config: CoordinatorConfig) -> CheckResult:
    """Whether restore drills can run on this host: a warning where they are off for want of a scratch
    etcd, a problem where [drill] enabled = true asks for them."""
    from etcdguard.common.base.durations import format_duration
    from etcdguard.common.base.errors import ToolError
    from etcdguard.coordinator.drill.policy import availability
    from etcdguard.coordinator.scratch import scratch_binaries

    try:
        binaries = scratch_binaries(config)
        found = availability(config.drill, None, f"{binaries.etcd} and {binaries.tool.path} "
                                                 f"(etcd {binaries.tool.version})")
    except ToolError as exc:
        found = availability(config.drill, str(exc))
    every = f"; every {format_duration(config.drill.interval)}" if found.scheduled else ""
    hint = ("install etcd-server and etcd-client on this host, or set [scratch] etcd and tool, so drills prove "
            "the backups restorable (docs/backup.md)")
    if found.wanted and not found.runnable:
        return CheckResult("drills", False, found.sentence, hint)
    return CheckResult("drills", True, found.sentence + every, "" if found.runnable else hint,
                       warning=not found.runnable and config.drill.enabled is None)


def _agent_checks(config: CoordinatorConfig, keys: Optional[Keys]) -> list[CheckResult]:
    if not config.members:
        return []
    if keys is None:
        return [CheckResult(f"agent {m.name}", False, "not tried: the keys above did not load", KEY_HINT)
                for m in config.members]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(config.members),
                                               thread_name_prefix="check") as pool:
        return list(pool.map(lambda m: agent_check(config, keys, m), config.members))


def agent_check(config: CoordinatorConfig, keys: Keys, m: MemberSettings) -> CheckResult:
    """Ping the member's agent, then read its status report: the agent answers, and it serves that member."""
    from etcdguard.common.wire import keys as wire_keys
    from etcdguard.coordinator.agents.client import AgentClient

    name = f"agent {m.name}"
    timeout = config.coordinator.request_timeout
    mine = wire_keys.fingerprint(keys.public) if keys.public else "none (insecure)"
    try:
        with AgentClient(m.name, m.agent, server_public_key=keys.members.get(m.name), client_public=keys.public,
                         client_secret=keys.secret, insecure=config.coordinator.insecure) as client:
            pong = client.call("ping", timeout=timeout)
            report = AgentReport.from_json(client.status(timeout=timeout))
    except ValueError as exc:
        return CheckResult(name, False, f"{m.agent}: its status report cannot be read ({exc})",
                           "run the same etcdguard version on the agents and the coordinator")
    except EtcdguardError as exc:
        return CheckResult(name, False, f"{m.agent}: {exc}",
                           f"is the agent running and reachable, is this coordinator's key ({mine}) in its "
                           "authorized_keys, and is members.public_key that agent's key?")
    if report.member.name != m.name:
        return CheckResult(name, False, f"{m.agent} serves member {report.member.name!r}, not {m.name!r}",
                           f"fix the members entry of {m.name} in {config.source}")
    etcd = report.etcd
    version = str(pong.get("version") or report.agent.version)
    detail = f"{m.agent}: agent {version}"
    if not etcd.healthy:
        return CheckResult(name, False, f"{detail}; etcd: {etcd.error or 'not healthy'}",
                           "see `etcdguard-agent check` on that node")
    detail += f", etcd {etcd.version} healthy{' (leader)' if etcd.is_leader else ''}, revision {etcd.revision}"
    if version != __version__:
        return CheckResult(name, True, f"{detail}; this coordinator is {__version__}",
                           "run the same etcdguard version everywhere", warning=True)
    return CheckResult(name, True, detail)
