"""Proof that a service is stopped, not an assumption that it is.

etcd is stopped when no TCP connect to any of its client URLs succeeds AND an
exclusive ``flock`` on ``<data-dir>/member/snap/db`` can be taken: etcd's bbolt
backend holds that lock for as long as the process lives, so a free lock means
no etcd (from any runtime, or started by hand) has this data open.
kube-apiserver is stopped when its port refuses connections and no process
runs its command line.

Each proof is a small object with ``check() -> (ok, why)``; ``wait_proven``
polls one with a deadline and raises StopNotProven naming what still holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Union

from etcdguard.agent.discovery.goflags import FlagError, etcd_flags
from etcdguard.agent.runtime.base import StopNotProven
from etcdguard.common.base.addresses import Address, connect_address
from etcdguard.common.base.polling import Deadline, PollTimeout, poll_until

POLL_INTERVAL = 0.05
CONNECT_TIMEOUT = 0.5


class StopProof(Protocol):
    """Something that can say, right now and without side effects, whether a service is gone."""

    def check(self) -> tuple[bool, str]:
        """(True, what was proven) or (False, what still holds)."""

    def describe(self) -> str:
        """One line: what this proof checks."""


# ---------------------------------------------------------------------------
# ports


def probe_target(url_or_hostport: str, default_port: int = 2379) -> Address:
    """Where to connect to probe a client URL (``https://h:p``, ``tcp://h:p``) or ``host:port``.

    Wildcard listen addresses mean "this node" and map to loopback (see
    base/addresses). Raises ValueError for anything that has no TCP host.
    """
    return connect_address(url_or_hostport, default_port)


def port_state(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> tuple[str, str]:
    """("open" | "closed" | "unknown", detail) for a TCP connect to host:port.

    Only an active refusal (or an address this node no longer has) counts as
    closed. A connect that times out is "unknown": a hung server with a full
    accept queue drops SYNs, and that is not proof it is gone.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open", "accepts connections"
    except ConnectionRefusedError:
        return "closed", "refused"
    except socket.timeout:
        return "unknown", f"no answer within {timeout:g}s"
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "closed", exc.strerror or str(exc)
        return "unknown", exc.strerror or str(exc)


def port_answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Does a TCP connect to host:port succeed?"""
    return port_state(host, port, timeout)[0] == "open"


# ---------------------------------------------------------------------------
# the bbolt lock


def db_path(data_dir: Path) -> Path:
    """etcd's bbolt file inside a data dir."""
    return Path(data_dir) / "member" / "snap" / "db"


def flock_free(path: Path) -> Optional[bool]:
    """True if an exclusive flock on ``path`` can be taken now (released at once),
    False if someone holds it, None if the file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def lock_holders(path: Path, locks_file: Path = Path("/proc/locks")) -> list[int]:
    """Pids /proc/locks names as holding a lock on ``path`` (best effort; [] if unknown)."""
    try:
        st = os.stat(path)
        text = locks_file.read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    return parse_proc_locks(text, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def parse_proc_locks(text: str, major: int, minor: int, inode: int) -> list[int]:
    """Pure: pids in /proc/locks text holding a lock on device major:minor, inode.

    A line looks like ``7: FLOCK  ADVISORY  WRITE 12249 fe:00:2172385 0 EOF``
    (device numbers in hex, inode in decimal); blocked waiters (``->``) are skipped.
    """
    pids: list[int] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or "->" in fields[1]:
            continue
        pid_field, dev_field = fields[4], fields[5]
        dev_parts = dev_field.split(":")
        if len(dev_parts) != 3:
            continue
        try:
            maj, mnr, ino = int(dev_parts[0], 16), int(dev_parts[1], 16), int(dev_parts[2])
            pid = int(pid_field)
        except ValueError:
            continue
        if (maj, mnr, ino) == (major, minor, inode) and pid > 0 and pid not in pids:
            pids.append(pid)
    return pids


# ---------------------------------------------------------------------------
# processes


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie, which holds no files or ports, is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X")


def start_ticks(pid: int) -> Optional[int]:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if gone.

    A pid and its start time name one process for good: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """argv of ``pid`` from /proc ([] if it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def process_label(pid: int) -> str:
    """'pid 123 (etcd)' for messages."""
    argv = cmdline(pid)
    return f"pid {pid} ({os.path.basename(argv[0])})" if argv else f"pid {pid}"


def same_command(argv: Sequence[str], command: Sequence[str]) -> bool:
    """Pure: is ``argv`` (from /proc) the process ``command`` describes?

    Arguments must match exactly; the program matches by its base name, since a
    container or PATH lookup may show it with or without a directory.
    """
    if not argv or not command or len(argv) != len(command):
        return False
    return os.path.basename(argv[0]) == os.path.basename(command[0]) and list(argv[1:]) == list(command[1:])


def find_processes(match: Callable[[list[str]], bool]) -> list[int]:
    """Live pids (other than ours) whose argv satisfies ``match``."""
    own = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        pid = int(entry)
        argv = cmdline(pid)
        if argv and match(argv) and pid_alive(pid):
            found.append(pid)
    return sorted(found)


def process_cwd(pid: int) -> Optional[str]:
    """The working directory of ``pid`` (None if gone or not ours to read)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def process_env(pid: int, name: str) -> Optional[str]:
    """One environment variable of ``pid`` as it was started (None if unset or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "surrogateescape")
    return None


def named_data_dir(argv: Sequence[str], cwd: Optional[str], env_data_dir: Optional[str]) -> Optional[str]:
    """Pure: the data dir an etcd command line names, absolute (``--data-dir``, else ``ETCD_DATA_DIR``),
    or None when it names none or cannot be read the way etcd reads it."""
    try:
        value = etcd_flags(argv).get("data-dir")
    except FlagError:
        return None
    value = value or env_data_dir
    if not value:
        return None
    if not os.path.isabs(value):
        if cwd is None:
            return None
        value = os.path.join(cwd, value)
    return os.path.normpath(value)


class Identity(Protocol):
    """Proof that a live pid is the process a service manages, before anything signals it."""

    def check(self, pid: int) -> tuple[bool, str]:
        """(True, what proves it) or (False, why it is not ours)."""

    def describe(self) -> str:
        """One line: what is checked."""


@dataclass(frozen=True)
class ExactCommand:
    """The pid runs exactly ``command`` (the program by base name, every argument equal)."""

    command: tuple[str, ...]

    def check(self, pid: int) -> tuple[bool, str]:
        argv = cmdline(pid)
        if same_command(argv, self.command):
            return True, "its command line is the configured start command"
        return False, f"its command line is not the configured start command ({' '.join(argv)[:200] or 'unreadable'})"

    def describe(self) -> str:
        return "its command line is exactly the configured start command"


@dataclass(frozen=True)
class EtcdMemberIdentity:
    """The pid is this member's etcd: its command line names this data dir (or is exactly the configured
    start command) AND it holds the bbolt lock on this data dir's ``member/snap/db``, which only the etcd
    serving that directory can hold."""

    data_dir: Path
    command: tuple[str, ...] = ()

    def check(self, pid: int) -> tuple[bool, str]:
        argv = cmdline(pid)
        ours = os.path.realpath(self.data_dir)
        named = named_data_dir(argv, process_cwd(pid), process_env(pid, "ETCD_DATA_DIR"))
        problems = []
        if named is not None and os.path.realpath(named) == ours:
            why = f"its command line names data dir {self.data_dir}"
        elif self.command and same_command(argv, self.command):
            why = "its command line is the configured start command"
        else:
            why = ""
            problems.append(f"its command line names data dir {named}, not {self.data_dir}" if named else
                            "its command line names no --data-dir and is not the configured start command")
        db = db_path(self.data_dir)
        holders = lock_holders(db)
        if pid not in holders:
            held = ", ".join(process_label(h) for h in holders) if holders else "no process"
            problems.append(f"it does not hold the lock on {db} (held by {held})")
        if problems:
            return False, "; ".join(problems)
        return True, f"{why} and it holds the lock on {db}"

    def describe(self) -> str:
        return (f"its command line names {self.data_dir} (or is the configured start command) and it holds "
                f"the lock on {db_path(self.data_dir)}")


# ---------------------------------------------------------------------------
# proofs


@dataclass(frozen=True)
class PortsClosed:
    """No TCP connect to any of these addresses succeeds."""

    addresses: tuple[str, ...]  # URLs or host:port
    connect_timeout: float = CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("no address to probe")
        for address in self.addresses:
            probe_target(address)  # raises ValueError now, not in the middle of a stop

    def check(self) -> tuple[bool, str]:
        problems = []
        for address in self.addresses:
            target = probe_target(address)
            state, detail = port_state(target.host, target.port, self.connect_timeout)
            if state == "open":
                problems.append(f"port {target.netloc} still answers")
            elif state == "unknown":
                problems.append(f"port {target.netloc} not proven closed ({detail})")
        if problems:
            return False, "; ".join(problems)
        return True, f"port {', '.join(self._targets())} closed"

    def _targets(self) -> list[str]:
        return [probe_target(a).netloc for a in self.addresses]

    def describe(self) -> str:
        return f"no TCP connect succeeds on {', '.join(self._targets())}"


@dataclass(frozen=True)
class DbUnlocked:
    """etcd's bbolt file in ``data_dir`` can be flock'ed exclusively (or does not exist)."""

    data_dir: Path

    def check(self) -> tuple[bool, str]:
        path = db_path(self.data_dir)
        try:
            free = flock_free(path)
        except OSError as exc:
            return False, f"cannot test the lock on {path}: {exc.strerror or exc}"
        if free is None:
            return True, f"{path} absent (nothing holds it)"
        if free:
            return True, f"{path} flock obtainable"
        holders = lock_holders(path)
        who = ", ".join(process_label(p) for p in holders) if holders else "an unknown process"
        return False, f"{path} is locked by {who}"

    def describe(self) -> str:
        return f"exclusive flock on {db_path(self.data_dir)} obtainable"


@dataclass(frozen=True)
class ProcessesGone:
    """No live process runs ``command`` (exactly, program matched by base name)."""

    command: tuple[str, ...]

    def check(self) -> tuple[bool, str]:
        pids = find_processes(lambda argv: same_command(argv, self.command))
        if pids:
            return False, f"{', '.join(process_label(p) for p in pids)} still runs {self._short()}"
        return True, f"no process runs {self._short()}"

    def _short(self) -> str:
        return os.path.basename(self.command[0]) if self.command else "(empty command)"

    def describe(self) -> str:
        return f"no process runs the command of {self._short()}"


@dataclass(frozen=True)
class AllOf:
    """Every one of ``proofs`` holds; the message lists what holds and what does not."""

    proofs: tuple[StopProof, ...]

    def check(self) -> tuple[bool, str]:
        results = [p.check() for p in self.proofs]
        failed = [why for ok, why in results if not ok]
        if failed:
            return False, "; ".join(failed)
        return True, "; ".join(why for _ok, why in results)

    def describe(self) -> str:
        return " and ".join(p.describe() for p in self.proofs)


def etcd_proof(client_urls: Sequence[str], data_dir: Path) -> AllOf:
    """The etcd proof: client ports closed AND the bbolt file lockable."""
    return AllOf((PortsClosed(tuple(client_urls)), DbUnlocked(Path(data_dir))))


def wait_proven(proof: StopProof, timeout: Union[float, Deadline], what: str,
                interval: float = POLL_INTERVAL) -> str:
    """Poll ``proof`` until it holds (returns its message) or ``timeout`` passes.

    Always checks at least once, so ``timeout=0`` is a single check.
    Raises StopNotProven naming ``what`` and what still holds.
    """
    last = ""

    def proven() -> Optional[tuple[str]]:
        nonlocal last
        ok, last = proof.check()
        return (last,) if ok else None

    try:
        return poll_until(proven, timeout, interval=interval, what=f"{what} to stop")[0]
    except PollTimeout as exc:
        raise StopNotProven(
            f"{what} not proven stopped after {exc.timeout:.1f}s: {last}. "
            "Nothing further was done; find what still runs it and stop it, then retry."
        ) from None


# ---------------------------------------------------------------------------
# the functions callers use


def etcd_stopped(client_urls: Sequence[str], data_dir: Path) -> tuple[bool, str]:
    """One check: (True, evidence) if etcd serving ``data_dir`` is gone, else (False, what holds)."""
    return etcd_proof(client_urls, data_dir).check()


def wait_etcd_stopped(client_urls: Sequence[str], data_dir: Path, timeout: float) -> str:
    """Wait until etcd is proven stopped; raise StopNotProven after ``timeout`` seconds."""
    return wait_proven(etcd_proof(client_urls, data_dir), timeout, f"etcd (data dir {data_dir})")


def wait_port_closed(url_or_hostport: str, timeout: float) -> str:
    """Wait until nothing accepts TCP connections on the address; raise StopNotProven otherwise."""
    return wait_proven(PortsClosed((url_or_hostport,)), timeout, url_or_hostport)


def wait_processes_gone(command: Sequence[str], timeout: float) -> str:
    """Wait until no process runs ``command``; raise StopNotProven otherwise."""
    return wait_proven(ProcessesGone(tuple(command)), timeout, os.path.basename(command[0]))
