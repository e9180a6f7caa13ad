"""The process runtime: a configured command the agent launches itself.

Used for hand-run etcd, the demo and the tests. The pid lives in ``pid_file``;
an etcd started by someone else is adopted by writing its pid there. A pid is
trusted only when it is proven to be this service (its ``Identity``): for
etcd, /proc shows a command line that names this member's data dir (or is
exactly the configured start command) AND /proc/locks shows that pid holding
the bbolt lock on this data dir's ``member/snap/db``; for other services, the
command line is exactly the configured one. So a recycled pid, or another
member's etcd written into the pid file, is never signalled: a pid that runs
the program but is not proven ours is refused (NotOurProcess) with the reason.

Stop is SIGTERM, then SIGKILL after a short grace (2 s by default): etcd is
crash-safe (WAL + bbolt) and a restore sets the old data aside anyway, while a
SIGTERM'd leader spends 5-9 s trying to hand over leadership. Stop returns only
once the pid is gone and the stop proof holds.

Note: a process started here is a child of the agent. Under systemd with the
default ``KillMode=control-group`` stopping the agent's unit also stops it; a
long-lived etcd is better run as its own unit (systemd runtime). Each child
has a thread of its own that waits for it (``_watch``), so a child that dies
(an etcd SIGKILLed, OOM-killed or crashed) is reaped at once instead of
staying a zombie until the agent next looks, and its end is logged. It waits
for that one pid only: the exit statuses of the tools other code runs
(etcdutl, systemctl) stay theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etcdguard.agent.runtime.base import NotOurProcess, RuntimeError_, StopNotProven
from etcdguard.agent.runtime.proof import (
    ExactCommand,
    Identity,
    StopProof,
    cmdline,
    find_processes,
    pid_alive,
    process_label,
    same_command,
    start_ticks,
    wait_proven,
)
from etcdguard.common.base.fsutil import atomic_write_bytes, ensure_private_dir
from etcdguard.common.base.polling import Deadline, PollTimeout, poll_until

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE = 2.0
_POLL = 0.02
# the agent's own systemd hand-offs; a child must not answer systemd on the agent's behalf
_AGENT_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """Pure: ``base`` without the variables systemd gave the agent itself (NOTIFY_SOCKET, ...)."""
    return {k: v for k, v in base.items() if k not in _AGENT_ONLY_ENV}


def parse_pid(text: str) -> Optional[int]:
    """Pure: the pid in a pid file's text (first token), or None if it holds none."""
    token = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    if not token.isdigit():
        return None
    pid = int(token)
    return pid if pid > 1 else None


def program_matches(argv: Sequence[str], command: Sequence[str], exe: Optional[str] = None,
                    resolved: Optional[str] = None) -> bool:
    """Pure: does a process with ``argv`` (and /proc exe ``exe``) run ``command``'s program?

    Matches on the program's base name, or on the executable's real path when
    both are known (``resolved`` is the configured program's real path).
    """
    if not argv or not command:
        return False
    if os.path.basename(argv[0]) == os.path.basename(command[0]):
        return True
    return exe is not None and resolved is not None and exe == resolved


def describe_exit(code: int) -> str:
    """Pure: a Popen return code in words ("killed by SIGKILL", "exit status 1")."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


@dataclass(frozen=True)
class StopOutcome:
    """How the last stop went (for logs, --json and the bench)."""

    pid: Optional[int]
    signals: tuple[str, ...]    # e.g. ("SIGTERM",) or ("SIGTERM", "SIGKILL")
    seconds: float              # signal to proof
    evidence: str               # the proof's message


class ProcessService:
    """A service run as a detached process whose pid is kept in ``pid_file``."""

    backend = "process"

    def __init__(
        self,
        name: str,
        start_command: Sequence[str],
        pid_file: Path,
        log_file: Path,
        stop_proof: StopProof,
        *,
        kill_grace: float = DEFAULT_KILL_GRACE,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None,
        identity: Optional[Identity] = None,
    ) -> None:
        """``identity`` proves a live pid is this service before it is signalled (default: exactly
        ``start_command``; etcd gets EtcdMemberIdentity from the factory)."""
        if not start_command:
            raise ValueError(f"{name}: empty start_command")
        self.name = name
        self.start_command = tuple(start_command)
        self.pid_file = Path(pid_file)
        self.log_file = Path(log_file)
        self.stop_proof = stop_proof
        self.kill_grace = kill_grace
        self.env = env
        self.cwd = cwd
        self.identity: Identity = identity or ExactCommand(self.start_command)
        self.last_stop: Optional[StopOutcome] = None
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._stopping: Optional[int] = None     # the pid stop() signals: its end is expected
        self._resolved: Optional[str] = None

    # -- pid bookkeeping

    def _resolved_program(self) -> Optional[str]:
        if self._resolved is None:
            found = shutil.which(self.start_command[0])
            self._resolved = os.path.realpath(found) if found else ""
        return self._resolved or None

    def _runs_our_program(self, pid: int) -> bool:
        try:
            exe: Optional[str] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        return program_matches(cmdline(pid), self.start_command, exe, self._resolved_program())

    def recorded_pid(self) -> Optional[int]:
        """The pid in ``pid_file`` (not checked), or None."""
        try:
            text = self.pid_file.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeError_(f"{self.name}: cannot read pid file {self.pid_file}: {exc.strerror}") from None
        return parse_pid(text)

    def _is_our_child(self, pid: int) -> bool:
        """Our own unreaped child: its pid cannot have been reused, and it runs what we started."""
        child = self._child
        return child is not None and child.pid == pid and child.poll() is None

    def proven_ours(self, pid: int) -> tuple[bool, str]:
        """(True, why) when the live ``pid`` is proven to be this service, else (False, why not)."""
        if self._is_our_child(pid):
            return True, "started by this agent"
        if not pid_alive(pid):
            return False, "not running"
        return self.identity.check(pid)

    def running_pid(self) -> Optional[int]:
        """The recorded pid if that process is alive and proven to be this service."""
        self._reap()
        pid = self.recorded_pid()
        if pid is None or not self.proven_ours(pid)[0]:
            return None
        return pid

    def _refuse_foreign(self, pid: int) -> None:
        """The recorded pid runs our program but is not proven ours: refuse, naming why, signal nothing."""
        if self._is_our_child(pid) or not pid_alive(pid) or not self._runs_our_program(pid):
            return   # ours, gone, or a recycled pid running something else: a stale pid file
        ok, why = self.proven_ours(pid)
        if not ok:
            raise NotOurProcess(
                f"{self.name}: {self.pid_file} names {process_label(pid)}, which is not this member's "
                f"{self.name}: {why}. Nothing was signalled. Write the pid of this member's {self.name} to "
                f"{self.pid_file} (or remove the file if it is not running) and retry")

    def adopt(self, pid: int) -> None:
        """Record a running process started by someone else as this service (only when proven ours)."""
        if not pid_alive(pid) or not self._runs_our_program(pid):
            raise RuntimeError_(
                f"{self.name}: pid {pid} does not run {os.path.basename(self.start_command[0])}; not adopted"
            )
        ok, why = self.proven_ours(pid)
        if not ok:
            raise NotOurProcess(f"{self.name}: {process_label(pid)} is not this member's {self.name} ({why}); "
                                "not adopted")
        self._write_pid(pid)

    def _write_pid(self, pid: int) -> None:
        if not self.pid_file.parent.is_dir():
            ensure_private_dir(self.pid_file.parent, 0o755)
        atomic_write_bytes(self.pid_file, f"{pid}\n".encode(), mode=0o644)

    def _forget_pid(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _reap(self) -> None:
        if self._child is not None and self._child.poll() is not None:
            self._child = None

    # -- Service

    def is_running(self) -> bool:
        return self.running_pid() is not None

    def describe(self) -> str:
        return (
            f"{self.name} (process): stop = SIGTERM the pid in {self.pid_file}, SIGKILL after "
            f"{self.kill_grace:g}s, then prove {self.stop_proof.describe()}; start = run "
            f"{os.path.basename(self.start_command[0])} detached, output to {self.log_file}"
        )

    def start(self, timeout: float) -> None:
        """Launch the command detached (own session) unless the recorded pid already runs it.

        Refuses when the stop proof fails (e.g. the port answers) but no pid is
        recorded: something else runs it, and a second copy would only fight it.
        """
        if self.running_pid() is not None:
            log.info("%s already running (pid %s); start is a no-op", self.name, self.recorded_pid())
            return
        ok, why = self.stop_proof.check()
        if not ok:
            # Exactly our command running, just unrecorded: adopt it rather than start a second copy or give up.
            if self._adopt_unrecorded() is not None:
                return
            raise RuntimeError_(
                f"{self.name} not started: {why}, but {self.pid_file} names no live {self.name}. "
                f"If that is the {self.name} to manage, adopt it by writing its pid to {self.pid_file}."
            )
        ensure_private_dir(self.log_file.parent)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            os.write(fd, f"---- etcdguard: starting {self.name} at {stamp} ----\n".encode())
            try:
                child = subprocess.Popen(
                    list(self.start_command),
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env=child_env(os.environ if self.env is None else self.env),
                    cwd=self.cwd,
                )
            except OSError as exc:
                raise RuntimeError_(
                    f"{self.name}: cannot run {self.start_command[0]}: {exc.strerror or exc}"
                ) from None
        finally:
            os.close(fd)
        try:
            self._write_pid(child.pid)
        except OSError as exc:
            # an unrecorded process could never be stopped by us: take it down again
            child.kill()
            child.wait()
            raise RuntimeError_(f"{self.name}: cannot write pid file {self.pid_file}: {exc.strerror}") from None
        self._child = child
        threading.Thread(target=self._watch, args=(child,), name=f"reap-{self.name}-{child.pid}",
                         daemon=True).start()
        log.info("%s started: pid %d, output in %s", self.name, child.pid, self.log_file)

    def _adopt_unrecorded(self) -> Optional[int]:
        """The one process running exactly the configured command, proven ours, recorded now as this
        service's pid; None when there is not exactly one.

        An agent killed between launching the command and writing the pid file leaves such a process;
        the next start or stop must find it, not start a second copy or wait for it to go away."""
        same = [pid for pid in find_processes(lambda argv: same_command(argv, self.start_command))
                if self.proven_ours(pid)[0]]
        if len(same) != 1:
            return None
        self._write_pid(same[0])
        log.warning("%s: adopted pid %d, which runs the configured command but was not recorded", self.name,
                    same[0])
        return same[0]

    def _watch(self, child: subprocess.Popen[bytes]) -> None:
        """Wait for ``child`` (this pid only) and reap it as soon as it exits; say how it ended.

        Popen's own lock makes this wait and the other threads' ``poll()`` take
        turns: while this thread waits, their poll says "running", which it is;
        the exit status is recorded under that lock in the same step as the
        reaping, so a pid that was reaped is never signalled as ours.
        """
        how = describe_exit(child.wait())
        if self._stopping == child.pid:
            log.debug("%s pid %d ended (%s)", self.name, child.pid, how)
        else:
            log.warning("%s pid %d exited on its own (%s); its output is in %s", self.name, child.pid, how,
                        self.log_file)

    def stop(self, timeout: float, grace: Optional[float] = None) -> None:
        """SIGTERM, SIGKILL after ``grace`` (default ``kill_grace``; 0: SIGKILL at once), wait for the
        pid to go, then prove it stopped."""
        deadline = Deadline(timeout)
        self._reap()
        recorded = self.recorded_pid()
        if recorded is not None:
            self._refuse_foreign(recorded)
        pid = self.running_pid()   # proven ours just now; its start time pins that very process
        if pid is None and not self.stop_proof.check()[0]:
            pid = self._adopt_unrecorded()
        started = start_ticks(pid) if pid is not None else None
        self._stopping = pid
        signals: list[str] = []
        grace = self.kill_grace if grace is None else grace
        if pid is not None:
            if grace > 0:
                self._signal(pid, signal.SIGTERM, started)
                signals.append("SIGTERM")
            if grace <= 0 or not self._wait_gone(pid, deadline.sooner(grace), started):
                self._signal(pid, signal.SIGKILL, started)
                signals.append("SIGKILL")
                if not self._wait_gone(pid, deadline, started):
                    raise StopNotProven(
                        f"{self.name}: pid {pid} still alive {timeout:.1f}s after {' and '.join(signals)} "
                        "(uninterruptible I/O?). Nothing further was done."
                    )
        evidence = wait_proven(self.stop_proof, deadline, self.name)
        if pid is not None:
            self._forget_pid()
        self.last_stop = StopOutcome(pid, tuple(signals), deadline.elapsed(), evidence)
        log.info("%s stopped%s (%s): %s", self.name, f" pid {pid}" if pid else " (was not running)",
                 "+".join(signals) or "no signal", evidence)

    def _signal(self, pid: int, sig: signal.Signals, started: Optional[int]) -> None:
        """Signal the process proven ours, or nothing: the pid must still have the start time it had then
        (a stopping etcd lets go of its bbolt lock before it exits, so the lock is not asked again)."""
        child = self._child
        if child is not None and child.pid == pid:
            if child.poll() is None:  # our unreaped child: its pid cannot have been reused
                child.send_signal(sig)
            return
        if started is None or start_ticks(pid) != started:  # re-checked right before signalling
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise StopNotProven(f"{self.name}: not allowed to signal pid {pid}; run the agent as root") from None

    def _wait_gone(self, pid: int, until: Deadline, started: Optional[int]) -> bool:
        child = self._child if self._child is not None and self._child.pid == pid else None

        def gone() -> bool:
            if child is not None:
                if child.poll() is None:
                    return False
                self._child = None  # exited and reaped
                return True
            return not pid_alive(pid) or start_ticks(pid) != started

        try:
            return poll_until(gone, until, interval=_POLL, what=f"{self.name} pid {pid} to exit")
        except PollTimeout:
            return False
