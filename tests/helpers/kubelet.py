"""A tiny kubelet for tests: runs the static pods a manifests dir describes.

Like the real kubelet's file source it polls the dir (every 50 ms here),
ignores dot-files, and for each ``*.yaml``/``*.yml``/``*.json`` manifest runs
the first container's ``command`` + ``args`` as a host process in its own
session, output appended to ``<log_dir>/<manifest stem>.log``. When a manifest
disappears it stops the process: SIGTERM to its process group, SIGKILL after
the pod's ``terminationGracePeriodSeconds`` (default 30, as Kubernetes). When a
manifest's content changes the pod is restarted; a process that exits while
its manifest is present is restarted after a short backoff (restartPolicy
Always). Containers, images and volumes are not modelled: paths in the
command are host paths.

Manifests (YAML or JSON) are read with the agent's manifest reader (PyYAML).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from etcdguard.agent.discovery.manifests import load_yaml

from .etcd import clean_env

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_GRACE = 30.0


def parse_manifest(text: str) -> Any:
    """A manifest's document (YAML or JSON), read by the agent's own manifest reader."""
    return load_yaml(text)


@dataclass(frozen=True)
class PodSpec:
    argv: tuple[str, ...]
    grace: float
    env: tuple[tuple[str, str], ...] = ()


def pod_spec(doc: Any) -> PodSpec:
    """The process a manifest describes; raises ValueError if it describes none."""
    if not isinstance(doc, dict) or doc.get("kind", "Pod") != "Pod":
        raise ValueError("not a Pod manifest")
    spec = doc.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers or not isinstance(containers[0], dict):
        raise ValueError("no spec.containers")
    c = containers[0]
    argv = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
    if not argv:
        raise ValueError("container has no command")
    grace = spec.get("terminationGracePeriodSeconds")
    env = tuple((str(e["name"]), str(e.get("value", ""))) for e in (c.get("env") or []) if isinstance(e, dict))
    return PodSpec(tuple(argv), float(DEFAULT_GRACE if grace is None else grace), env)


@dataclass
class _Pod:
    name: str
    digest: str
    spec: Optional[PodSpec]
    proc: Optional[subprocess.Popen[bytes]] = None
    restart_at: float = 0.0
    backoff: float = 0.5
    starts: int = 0


@dataclass(frozen=True)
class Event:
    at: float
    pod: str
    what: str     # started | exited | sigterm | sigkill | stopped | invalid
    detail: str = ""


@dataclass
class TestKubelet:
    """Run it with start(); always call stop_all() (the fixture does)."""

    __test__ = False  # not a pytest test class

    manifests_dir: Path
    log_dir: Path
    poll_interval: float = 0.05
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.manifests_dir = Path(self.manifests_dir)
        self.log_dir = Path(self.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._pods: dict[str, _Pod] = {}
        self._stopping: dict[str, tuple[threading.Thread, subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self._quit = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.errors: list[str] = []

    # -- inspection

    def _event(self, pod: str, what: str, detail: str = "") -> None:
        with self._lock:
            self.events.append(Event(time.monotonic(), pod, what, detail))

    def events_for(self, pod: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.pod == pod]

    def pid(self, name: str) -> Optional[int]:
        """Pid of the running process of manifest ``name`` (file name), or None."""
        with self._lock:
            pod = self._pods.get(name)
            if pod is None or pod.proc is None or pod.proc.poll() is not None:
                return None
            return pod.proc.pid

    def stopping(self, name: str) -> bool:
        with self._lock:
            entry = self._stopping.get(name)
        return entry is not None and entry[0].is_alive()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{Path(name).stem}.log"

    # -- lifecycle

    def start(self) -> TestKubelet:
        self._thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._quit.is_set():
            try:
                self._sync()
            except Exception as exc:  # noqa: BLE001 - keep syncing; the test reads .errors
                self.errors.append(repr(exc))
            self._quit.wait(self.poll_interval)

    def _read_manifests(self) -> dict[str, tuple[str, bytes]]:
        found: dict[str, tuple[str, bytes]] = {}
        try:
            entries = sorted(os.listdir(self.manifests_dir))
        except FileNotFoundError:
            return found
        for name in entries:
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                continue
            try:
                data = (self.manifests_dir / name).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue
            found[name] = (hashlib.sha256(data).hexdigest(), data)
        return found

    def _sync(self) -> None:
        present = self._read_manifests()
        for name in list(self._pods):
            pod = self._pods[name]
            if name not in present or present[name][0] != pod.digest:
                del self._pods[name]
                self._stop_async(name, pod)
        now = time.monotonic()
        for name, (digest, data) in present.items():
            if self.stopping(name):
                continue  # like the kubelet: the old pod must be gone before the new one starts
            pod = self._pods.get(name)
            if pod is None:
                try:
                    spec: Optional[PodSpec] = pod_spec(parse_manifest(data.decode("utf-8")))
                except (ValueError, UnicodeDecodeError) as exc:
                    spec = None
                    self._event(name, "invalid", str(exc))
                pod = _Pod(name, digest, spec)
                self._pods[name] = pod
            if pod.spec is None:
                continue
            if pod.proc is not None and pod.proc.poll() is not None:
                self._event(name, "exited", f"status {pod.proc.returncode}")
                pod.proc = None
                pod.restart_at = now + pod.backoff
                pod.backoff = min(pod.backoff * 2, 5.0)
            if pod.proc is None and now >= pod.restart_at:
                self._launch(pod)

    def _launch(self, pod: _Pod) -> None:
        assert pod.spec is not None
        env = clean_env(dict(pod.spec.env))
        with open(self.log_path(pod.name), "ab") as log:
            log.write(f"---- test kubelet: starting {pod.name} ----\n".encode())
            log.flush()
            try:
                pod.proc = subprocess.Popen(list(pod.spec.argv), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
            except OSError as exc:
                self._event(pod.name, "invalid", f"cannot run {pod.spec.argv[0]}: {exc}")
                pod.restart_at = time.monotonic() + 60
                return
        pod.starts += 1
        self._event(pod.name, "started", f"pid {pod.proc.pid}")

    def _stop_async(self, name: str, pod: _Pod) -> None:
        if pod.proc is None or pod.spec is None:
            return
        t = threading.Thread(target=self._terminate, args=(name, pod.proc, pod.spec.grace), daemon=True)
        with self._lock:
            self._stopping[name] = (t, pod.proc)
        t.start()

    def _terminate(self, name: str, proc: subprocess.Popen[bytes], grace: float) -> None:
        if proc.poll() is None:
            self._event(name, "sigterm", f"pid {proc.pid}")
            _killpg(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._event(name, "sigkill", f"pid {proc.pid} after {grace:g}s")
                _killpg(proc, signal.SIGKILL)
                proc.wait()
        self._event(name, "stopped", f"pid {proc.pid} status {proc.returncode}")

    def stop_all(self, grace: float = 0.0) -> None:
        """Stop the loop and every pod: SIGTERM, SIGKILL after ``grace`` (0: SIGKILL at once)."""
        self._quit.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            stopping = list(self._stopping.values())
        for _t, proc in stopping:
            if grace <= 0 and proc.poll() is None:
                _killpg(proc, signal.SIGKILL)
        for name, pod in list(self._pods.items()):
            if pod.proc is not None and pod.proc.poll() is None:
                if grace > 0:
                    self._terminate(name, pod.proc, grace)
                else:
                    _killpg(pod.proc, signal.SIGKILL)
                    pod.proc.wait()
        self._pods.clear()
        for t, _proc in stopping:
            t.join(timeout=60)


def _killpg(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # our unreaped child leads its own session, so its pgid is its pid and cannot have been reused
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
