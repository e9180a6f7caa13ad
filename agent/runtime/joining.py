"""A member joining an existing cluster: a temporary form of how etcd runs here, and the steady form back.

A replaced member starts with an empty data dir, so etcd must be told to join
(``--initial-cluster-state existing``) the cluster as it is now
(``--initial-cluster``). Each runtime gets that its own way, and gets its
steady form back byte for byte once the member is promoted:

- static pod: the parked manifest (retire parked it) stays parked as the
  steady copy; an edited manifest goes in its place, and the kubelet starts
  etcd from it. Settling moves the parked original back over it (the kubelet
  restarts etcd on it; a member with data ignores ``--initial-cluster-state``);
- systemd: a runtime drop-in (``/run/systemd/system/UNIT.d``) adds an
  environment file with ``ETCD_INITIAL_CLUSTER_STATE`` and
  ``ETCD_INITIAL_CLUSTER`` (read after the unit's own, so it wins over them);
  settling removes both and reloads systemd. A unit that passes those flags on
  its command line is refused: a flag wins over any environment;
- process: the configured command with the two flags replaced is started
  once; the configuration itself is never edited, so there is nothing to put
  back.

``joining_argv`` and ``joining_manifest`` are pure.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Optional, Protocol

from etcdguard.agent.discovery.goflags import FlagError, replace_etcd_flags
from etcdguard.agent.discovery.manifests import ManifestError, container_argv, find_container, load_pod
from etcdguard.agent.discovery.member import LocalMember
from etcdguard.agent.runtime.base import RuntimeError_, Service
from etcdguard.agent.runtime.process import ProcessService
from etcdguard.agent.runtime.proof import db_path, lock_holders
from etcdguard.agent.runtime.static_pod import StaticPodService, move_preserving
from etcdguard.agent.runtime.systemd import QUERY_TIMEOUT, SystemdService
from etcdguard.common.base import fsutil
from etcdguard.common.base.polling import PollTimeout, poll_until

log = logging.getLogger(__name__)

SYSTEMD_RUNTIME_DIR = Path("/run/systemd/system")
DROP_IN = "zz-etcdguard-join.conf"


def joining_argv(argv: list[str] | tuple[str, ...], initial_cluster: str) -> list[str]:
    """etcd's command line joining ``initial_cluster`` as an existing cluster (pure); RuntimeError_ when it
    cannot be edited."""
    try:
        return replace_etcd_flags(list(argv), {"initial-cluster-state": "existing",
                                               "initial-cluster": initial_cluster})
    except FlagError as exc:
        raise RuntimeError_(f"cannot make etcd's command join the cluster: {exc}") from None


def joining_manifest(text: str, initial_cluster: str) -> str:
    """The manifest ``text`` with its etcd container's command joining ``initial_cluster`` (pure), as JSON
    (which is YAML: the kubelet reads it alike)."""
    try:
        pod = load_pod(text)
    except ManifestError as exc:
        raise RuntimeError_(f"cannot read the etcd manifest: {exc}") from None
    container = find_container(pod, "etcd")
    if container is None:
        raise RuntimeError_("the etcd manifest has no etcd container")
    try:
        argv = container_argv(container)
    except ManifestError as exc:
        raise RuntimeError_(f"cannot read the etcd manifest: {exc}") from None
    container["command"] = joining_argv(argv, initial_cluster)
    container.pop("args", None)
    return json.dumps(pod, indent=2) + "\n"


def joining_environment(initial_cluster: str) -> str:
    """The environment file a systemd drop-in adds (pure)."""
    return f"ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER={initial_cluster}\n"


class JoinForm(Protocol):
    def start(self, initial_cluster: str, timeout: float) -> dict[str, Any]:
        """Start etcd joining ``initial_cluster`` through the temporary form (idempotent)."""

    def settle(self, timeout: float) -> dict[str, Any]:
        """The steady form back exactly as before (idempotent); etcd runs on it (or keeps running)."""


class ProcessJoin:
    def __init__(self, service: ProcessService) -> None:
        self.service = service

    def start(self, initial_cluster: str, timeout: float) -> dict[str, Any]:
        s = self.service
        argv = joining_argv(s.start_command, initial_cluster)
        once = ProcessService(s.name, argv, s.pid_file, s.log_file, s.stop_proof, kill_grace=s.kill_grace, env=s.env,
                              cwd=s.cwd, identity=s.identity)
        once.start(timeout)
        return {"etcd": "started", "form": "the configured command with --initial-cluster-state=existing and "
                                           "--initial-cluster (the configuration is not edited)"}

    def settle(self, timeout: float) -> dict[str, Any]:
        return {"config": "unchanged: the process runtime's start_command was never edited"}


class StaticPodJoin:
    def __init__(self, service: StaticPodService, data_dir: Path) -> None:
        self.service = service
        self.db = db_path(data_dir)

    def start(self, initial_cluster: str, timeout: float) -> dict[str, Any]:
        s = self.service
        if not s.parked_path.exists():
            raise RuntimeError_(f"{s.parked_path} is missing: the steady manifest must be parked before etcd joins "
                                "(retire parks it)")
        st = os.stat(s.parked_path)
        edited = joining_manifest(s.parked_path.read_text(encoding="utf-8"), initial_cluster)
        with fsutil.atomic_writer(s.manifest_path, st.st_mode & 0o7777) as fh:
            fh.write(edited.encode())
            fh.flush()
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.fchown(fh.fileno(), st.st_uid, st.st_gid)
        return {"etcd": "started", "form": f"{s.manifest_path} joining (the steady one stays at {s.parked_path})"}

    def settle(self, timeout: float) -> dict[str, Any]:
        s = self.service
        if not s.parked_path.exists():
            return {"config": f"{s.manifest_path} is the steady manifest already"}
        joined = set(lock_holders(self.db))   # the etcd the kubelet runs from the joining manifest
        try:
            move_preserving(s.parked_path, s.manifest_path)
        except OSError as exc:
            raise RuntimeError_(f"cannot put {s.parked_path} back to {s.manifest_path}: {exc.strerror or exc}"
                                ) from None
        if joined:
            # The kubelet restarts the pod on the changed manifest: wait for the new etcd (another pid holding
            # the database), so the health that follows is the steady etcd's.
            try:
                poll_until(lambda: bool(lock_holders(self.db)) and not set(lock_holders(self.db)) & joined,
                           timeout, interval=0.05, what="the kubelet to restart etcd on the steady manifest")
            except PollTimeout as exc:
                raise RuntimeError_(f"{s.manifest_path} is back, but etcd was not restarted on it: {exc}") from None
        return {"config": f"{s.manifest_path} back byte for byte (the kubelet restarted etcd on it)"}


class SystemdJoin:
    def __init__(self, service: SystemdService, member: LocalMember, op: str,
                 runtime_dir: Path = SYSTEMD_RUNTIME_DIR, env_dir: Path = Path("/run/etcdguard")) -> None:
        self.service = service
        self.member = member
        self.drop_in = runtime_dir / f"{service.unit}.d" / DROP_IN
        self.env_file = env_dir / f"join-{op}.env"

    def _on_command_line(self) -> Optional[str]:
        for field, source in self.member.sources:
            if field == "initial_cluster" and "ExecStart" in source:
                return source
        return None

    def _reload(self) -> None:
        s = self.service
        proc = subprocess.run([s.systemctl, "daemon-reload"], capture_output=True, text=True, timeout=QUERY_TIMEOUT,
                              check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError_(f"`{s.systemctl} daemon-reload` failed: {(proc.stderr or '').strip()[-300:]}")

    def start(self, initial_cluster: str, timeout: float) -> dict[str, Any]:
        where = self._on_command_line()
        if where is not None:
            raise RuntimeError_(f"the unit passes --initial-cluster on etcd's command line ({where}), which no "
                                "environment overrides: move --initial-cluster and --initial-cluster-state into an "
                                "EnvironmentFile (ETCD_INITIAL_CLUSTER...), then replace again")
        fsutil.ensure_private_dir(self.env_file.parent, 0o755)
        fsutil.atomic_write_bytes(self.env_file, joining_environment(initial_cluster).encode(), mode=0o644)
        self.drop_in.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_bytes(self.drop_in, f"[Service]\nEnvironmentFile={self.env_file}\n".encode(), mode=0o644)
        self._reload()
        self.service.start(timeout)
        return {"etcd": "started", "form": f"drop-in {self.drop_in} with {self.env_file}"}

    def settle(self, timeout: float) -> dict[str, Any]:
        removed = []
        for path in (self.drop_in, self.env_file):
            if path.exists():
                path.unlink()
                removed.append(str(path))
        if removed:
            self._reload()
        return {"config": f"{self.service.unit} as before (removed {', '.join(removed) or 'nothing'})"}


def join_form(service: Service, member: LocalMember, op: str) -> JoinForm:
    """How etcd is made to join here, by its runtime."""
    if isinstance(service, ProcessService):
        return ProcessJoin(service)
    if isinstance(service, StaticPodService):
        return StaticPodJoin(service, member.data_dir)
    if isinstance(service, SystemdService):
        return SystemdJoin(service, member, op)
    raise RuntimeError_(f"etcd's runtime here ({service.backend}) cannot start a joining member")
