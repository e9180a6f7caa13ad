"""The restore tool's process: it dies with the agent, and a leftover is found and killed.

`etcdutl snapshot restore` writes into this operation's workspace. If the
agent is killed while it runs, a tool that kept running would go on writing
into a directory a resumed restore is about to remove and redo. So:

- the tool runs in its own process group (the agent can kill all of it on a
  timeout or an interrupt) with PR_SET_PDEATHSIG=SIGKILL on Linux, so the
  kernel kills it when the agent dies, SIGKILL included;
- its pid and start time are recorded in the operation's directory while it
  runs (``prepare-tool.json``);
- before a prepare is redone, every live process whose command line is this
  operation's restore command (its arguments name our snapshot and our
  workspace, which holds the operation id) is killed and proven gone. The
  command line is re-checked through a pidfd right before the signal, so a
  recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from etcdguard.agent.runtime.proof import cmdline, find_processes, pid_alive, start_ticks
from etcdguard.common.base import fsutil
from etcdguard.common.base.errors import ToolError, UnsafeRefusal
from etcdguard.common.base.polling import PollTimeout, poll

log = logging.getLogger(__name__)

RECORD_NAME = "prepare-tool.json"
PR_SET_PDEATHSIG = 1
GONE_TIMEOUT = 10.0


def is_restore_command(argv: Sequence[str], restore_argv: Sequence[str]) -> bool:
    """Pure: is ``argv`` (from /proc) running ``restore_argv``'s restore?

    The arguments after the program must end the command line exactly (a
    wrapper script or interpreter may come first); they name the snapshot and
    the operation's own workspace, so nothing else matches.
    """
    tail = list(restore_argv[1:])
    return bool(tail) and len(argv) > len(tail) and list(argv[-len(tail):]) == tail


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    stdout: str
    stderr: str


IOPRIO_SET = {"x86_64": 251, "aarch64": 30}   # the ioprio_set syscall; other machines keep their I/O class
IOPRIO_WHO_PROCESS = 1
IOPRIO_IDLE = 3 << 13      # class 3 (idle), data 0


def _child_setup(low_priority: bool = False) -> Optional[Callable[[], None]]:
    """A preexec function that asks the kernel to SIGKILL the child when the agent dies, and with
    ``low_priority`` gives it the lowest CPU and I/O priority (it runs while etcd still serves)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    syscall = getattr(libc, "syscall", None)
    ioprio_set = IOPRIO_SET.get(os.uname().machine)

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the agent died before the request took effect
            os._exit(1)
        if low_priority:
            with contextlib.suppress(OSError):
                os.nice(19)
            if syscall is not None and ioprio_set is not None:
                syscall(ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_IDLE)
    return setup


def run_tool(argv: Sequence[str], env: dict[str, str], timeout: float, record_dir: Path,
             low_priority: bool = False) -> ToolRun:
    """Run the restore tool to completion; kill its whole group on a timeout or any interruption.

    ``low_priority``: nice 19 and the idle I/O class (it runs beside a serving etcd)."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True,
                            # only prctl, getppid, nice and ioprio_set run in the child
                            preexec_fn=_child_setup(low_priority))  # noqa: PLW1509
    record = record_dir / RECORD_NAME
    try:
        fsutil.atomic_write_json(record, {"pid": proc.pid, "start_ticks": start_ticks(proc.pid),
                                          "argv": list(argv), "started_at": time.time()})
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(f"{Path(argv[0]).name} snapshot restore did not finish within {timeout:.0f}s; "
                            "it was killed") from None
        return ToolRun(proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)   # our unreaped child: its group id cannot be reused
            proc.communicate()
        with contextlib.suppress(FileNotFoundError):
            record.unlink()


def kill_leftovers(restore_argv: Sequence[str], record_dir: Path, timeout: float = GONE_TIMEOUT) -> list[str]:
    """Kill every live process running this operation's restore command; prove them gone.

    Returns what was killed (for the journal). Raises UnsafeRefusal if one
    survives, since redoing the prepare beside it would mix two restores.
    """
    rec_pid, rec_ticks = _read_record(record_dir / RECORD_NAME)
    pids = find_processes(lambda argv: is_restore_command(argv, restore_argv))
    if rec_pid is not None and rec_pid not in pids and rec_ticks is not None and start_ticks(rec_pid) == rec_ticks:
        pids.append(rec_pid)   # still must prove its command line below
    killed: list[str] = []
    for pid in pids:
        recorded = pid == rec_pid and start_ticks(pid) in (rec_ticks, None)
        label = _kill_if_ours(pid, restore_argv)
        if label is not None:
            killed.append(label + (" (recorded by the interrupted run)" if recorded else ""))
    left: list[int] = []
    try:
        for _ in poll(timeout, interval=0.05, what="the leftover restore tools to exit"):
            left = [p for p in pids if pid_alive(p) and is_restore_command(cmdline(p), restore_argv)]
            if not left:
                break
    except PollTimeout:
        raise UnsafeRefusal(f"a restore tool left over from an earlier run of this operation is still running "
                            f"(pids {left}) after SIGKILL; refusing to redo the prepare beside it") from None
    with contextlib.suppress(FileNotFoundError):
        (record_dir / RECORD_NAME).unlink()
    for line in killed:
        log.warning("killed a leftover restore tool: %s", line)
    return killed


def _read_record(path: Path) -> tuple[Optional[int], Optional[int]]:
    try:
        data = json.loads(path.read_text())
        return int(data["pid"]), (int(data["start_ticks"]) if data.get("start_ticks") is not None else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _kill_if_ours(pid: int, restore_argv: Sequence[str]) -> Optional[str]:
    """SIGKILL ``pid`` (and its process group if it leads one) once proven to run our restore."""
    fd: Optional[int] = None
    with contextlib.suppress(AttributeError, OSError):
        fd = os.pidfd_open(pid)   # pins the process: the check below is about the one we signal
    try:
        argv = cmdline(pid)
        if not (pid_alive(pid) and is_restore_command(argv, restore_argv)):
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            if fd is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        return f"pid {pid} ({os.path.basename(argv[0])})"
    finally:
        if fd is not None:
            os.close(fd)
