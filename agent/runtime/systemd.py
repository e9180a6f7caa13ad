"""The systemd runtime: ``systemctl stop/start/is-active UNIT``.

systemctl returning is not the proof: after ``systemctl stop`` the same stop
proof as for every runtime must hold (for etcd: client port closed and the
bbolt file lockable), so an etcd running outside the unit, or a unit whose
stop does not reach the process, is caught.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from typing import Optional

from etcdguard.agent.runtime.base import RuntimeError_, StopNotProven
from etcdguard.agent.runtime.proof import StopProof, wait_proven
from etcdguard.common.base.polling import Deadline

log = logging.getLogger(__name__)

# is-active states in which the unit's main process may exist
RUNNING_STATES = ("active", "activating", "deactivating", "reloading", "refreshing")
QUERY_TIMEOUT = 15.0


class SystemdService:
    """A service managed as a systemd unit."""

    backend = "systemd"

    def __init__(self, name: str, unit: str, proof: StopProof, systemctl: str = "systemctl") -> None:
        if not unit:
            raise ValueError(f"{name}: empty unit name")
        self.name = name
        self.unit = unit
        self.proof = proof
        self.systemctl = systemctl

    def _run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [self.systemctl, *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=max(1.0, timeout), check=False,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise RuntimeError_(f"{self.name}: {self.systemctl} not found (is this a systemd host?)") from None
        except PermissionError:
            raise RuntimeError_(f"{self.name}: {self.systemctl} is not executable") from None

    def state(self) -> str:
        """``systemctl is-active UNIT`` ("active", "inactive", "failed", ...)."""
        try:
            proc = self._run(["is-active", self.unit], QUERY_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "unknown"
        return proc.stdout.strip() or "unknown"

    def is_running(self) -> bool:
        return self.state() in RUNNING_STATES

    def describe(self) -> str:
        return (
            f"{self.name} (systemd): stop = {self.systemctl} stop {self.unit}, then prove "
            f"{self.proof.describe()}; start = {self.systemctl} start {self.unit}"
        )

    def stop(self, timeout: float, grace: Optional[float] = None) -> None:
        """``systemctl stop`` (the unit's own TimeoutStopSec applies), then the proof."""
        deadline = Deadline(timeout)
        try:
            proc = self._run(["stop", self.unit], timeout)
        except subprocess.TimeoutExpired:
            raise StopNotProven(
                f"{self.name}: `{self.systemctl} stop {self.unit}` did not return within {timeout:.0f}s; "
                "nothing further was done"
            ) from None
        if proc.returncode != 0:
            raise StopNotProven(
                f"{self.name}: `{self.systemctl} stop {self.unit}` failed (exit {proc.returncode}): "
                f"{_tail(proc.stderr)}; nothing further was done"
            )
        evidence = wait_proven(self.proof, deadline, f"{self.name} ({self.unit})")
        log.info("%s stopped (%s): %s", self.name, self.unit, evidence)

    def start(self, timeout: float) -> None:
        """``systemctl start`` (after ``daemon-reload`` if systemd says the unit changed on disk).

        A Type=notify etcd is "activating" until it has joined its cluster; if
        systemctl is still waiting when ``timeout`` passes, the start counts as
        requested as long as the unit is activating (health is the caller's job).
        """
        deadline = Deadline(timeout)
        if self._needs_daemon_reload():
            proc = self._run(["daemon-reload"], QUERY_TIMEOUT)
            if proc.returncode != 0:
                raise RuntimeError_(f"{self.name}: `{self.systemctl} daemon-reload` failed: {_tail(proc.stderr)}")
        try:
            proc = self._run(["start", self.unit], deadline.remaining())
        except subprocess.TimeoutExpired:
            state = self.state()
            if state in RUNNING_STATES:
                log.info("%s: %s still %s after %.0fs; start requested", self.name, self.unit, state, timeout)
                return
            raise RuntimeError_(
                f"{self.name}: `{self.systemctl} start {self.unit}` did not finish within {timeout:.0f}s "
                f"(unit {state})"
            ) from None
        if proc.returncode != 0:
            raise RuntimeError_(
                f"{self.name}: `{self.systemctl} start {self.unit}` failed (exit {proc.returncode}): "
                f"{_tail(proc.stderr)}; see `journalctl -u {self.unit}`"
            )
        log.info("%s started (%s)", self.name, self.unit)

    def _needs_daemon_reload(self) -> bool:
        try:
            proc = self._run(["show", "--property=NeedDaemonReload", "--value", self.unit], QUERY_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and proc.stdout.strip() == "yes"


def _tail(text: Optional[str], limit: int = 400) -> str:
    text = (text or "").strip()
    return text[-limit:] if text else "(no output)"
