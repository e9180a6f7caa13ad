"""The runtime interface: how one managed service (etcd or kube-apiserver) is
stopped and started on this node. Backends: static-pod, systemd, process.

`stop()` returns only when the service is PROVEN stopped (see proof.py) and
raises StopNotProven otherwise; callers do nothing destructive after a raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from etcdguard.common.base.errors import EXIT_UNSAFE, EtcdguardError


class RuntimeError_(EtcdguardError):
    """Stopping or starting a service failed."""


class StopNotProven(RuntimeError_):
    """The service could not be proven stopped within the bound; nothing further was done."""


class NotOurProcess(RuntimeError_):
    """A recorded pid runs the service's program but is not proven to be this service: never signalled."""

    exit_code = EXIT_UNSAFE


class Service(Protocol):
    """One service on this node."""

    name: str       # "etcd" or "kube-apiserver"
    backend: str    # "static-pod" | "systemd" | "process"

    def stop(self, timeout: float, grace: Optional[float] = None) -> None:
        """Stop it and prove it stopped within ``timeout`` seconds, else raise StopNotProven.

        ``grace``: how long a process the agent signals itself gets between SIGTERM and SIGKILL
        (0: SIGKILL at once); backends whose stop is the kubelet's or systemd's ignore it."""

    def start(self, timeout: float) -> None:
        """Start it (launch the process / put the manifest back / systemctl start).

        Returns once the start was requested and the process exists; health is the caller's job.
        """

    def is_running(self) -> bool:
        """Best current knowledge; cheap, no side effects."""

    def describe(self) -> str:
        """One line for --plan: how this service is stopped and started here."""


@dataclass(frozen=True)
class NodeRuntime:
    """The services a restore drives on this node."""

    etcd: Service
    apiserver: Optional[Service] = None
