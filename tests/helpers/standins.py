"""Stand-ins for things this machine does not have: kube-apiserver and a working systemctl.

No kube-apiserver binary is available here, so a tiny HTTP server plays it:
it listens on ``--bind-address``:``--secure-port`` (the real flag names, so
the agent reads them from a manifest as it would for the real thing), answers
``GET /livez`` with 200 "ok" and exits on SIGTERM.

systemd is not PID 1 here, so ``systemctl`` cannot work. ``SystemctlStandin``
writes an executable ``systemctl`` that records every call and keeps unit
states in a JSON file; a unit can be given a real command, which ``start``
launches detached and ``stop`` terminates (or, with ``stop = "noop"``, only
pretends to: a unit whose stop never reaches its process).

This file is also the program both stand-ins run (``python standins.py
kube-apiserver ...`` / the generated systemctl imports it), so it uses the
standard library only.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------------
# kube-apiserver stand-in


def apiserver_command(port: int, bind_address: str = "127.0.0.1", ignore_sigterm: bool = False) -> list[str]:
    """argv that runs the stand-in kube-apiserver (with this interpreter)."""
    argv = [sys.executable, str(HERE), "kube-apiserver", f"--secure-port={port}", f"--bind-address={bind_address}"]
    if ignore_sigterm:
        argv.append("--ignore-sigterm")
    return argv


def livez(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> Optional[str]:
    """Body of GET /livez if it answers 200, else None."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}:{port}/livez", timeout=timeout) as resp:
            if int(resp.status) == 200:
                return resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/livez", "/readyz", "/healthz"):
            body, status = b"ok", 200
        else:
            body, status = b"not found", 404
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _flag(argv: list[str], name: str, default: str) -> str:
    for arg in argv:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def apiserver_main(argv: list[str]) -> int:
    port = int(_flag(argv, "--secure-port", "6443"))
    host = _flag(argv, "--bind-address", "127.0.0.1")
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    done = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, signal.SIG_IGN if "--ignore-sigterm" in argv else on_term)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    print(f"stand-in kube-apiserver serving on {host}:{port}", flush=True)
    while not done.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    print("stand-in kube-apiserver: SIGTERM, exiting", flush=True)
    return 0


# ---------------------------------------------------------------------------
# systemctl stand-in


class SystemctlStandin:
    """Writes ``<dir>/systemctl`` and inspects what it was asked to do.

    ``units`` maps a unit name to optional settings: ``command`` (argv to run on
    start), ``stop`` ("term": SIGTERM then SIGKILL after 5 s, the default; or
    "noop": mark inactive and leave the process running), ``state`` (initial,
    default "inactive"), ``need_reload`` (NeedDaemonReload answer), ``fail_start``.
    """

    def __init__(self, directory: Path, units: dict[str, dict[str, Any]]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "systemctl"
        self.state_file = self.dir / "systemctl-state.json"
        self.calls_file = self.dir / "systemctl-calls.jsonl"
        state = {name: {"state": "inactive", "stop": "term", **settings} for name, settings in units.items()}
        self.state_file.write_text(json.dumps(state, indent=1))
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(HERE.parent)!r})\n"
            "from standins import systemctl_main\n"
            f"sys.exit(systemctl_main({str(self.state_file)!r}, {str(self.calls_file)!r}, sys.argv[1:]))\n"
        )
        self.path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line.strip()]

    def units(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = json.loads(self.state_file.read_text())
        return data

    def pids(self) -> list[int]:
        """Pids of processes the stand-in started that are still alive."""
        out = []
        for unit in self.units().values():
            pid = unit.get("pid")
            if pid and _alive(int(pid)):
                out.append(int(pid))
        return out

    def kill_all(self) -> None:
        """Teardown: SIGKILL every process a unit started (by its recorded pid)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def systemctl_main(state_file: str, calls_file: str, argv: list[str]) -> int:
    """The stand-in systemctl: ``start|stop|is-active|show|daemon-reload``."""
    with open(calls_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(argv) + "\n")
    state: dict[str, dict[str, Any]] = json.loads(Path(state_file).read_text())
    args = [a for a in argv if not a.startswith("-")]
    verb = args[0] if args else ""
    if verb == "daemon-reload":
        for unit in state.values():
            unit["need_reload"] = False
        _save(state_file, state)
        return 0
    if len(args) < 2:
        print(f"systemctl stand-in: unsupported call {argv}", file=sys.stderr)
        return 2
    name = args[1]
    unit = state.get(name)
    if unit is None:
        print(f"Unit {name} not found.", file=sys.stderr)
        return 5 if verb in ("start", "stop") else 4
    if verb == "is-active":
        print(unit["state"])
        return 0 if unit["state"] == "active" else 3
    if verb == "show":
        print("yes" if unit.get("need_reload") else "no")
        return 0
    if verb in ("start", "stop"):
        code = (_unit_start if verb == "start" else _unit_stop)(state_file, name, unit)
        _save(state_file, state)
        return code
    print(f"systemctl stand-in: unsupported verb {verb!r}", file=sys.stderr)
    return 2


def _unit_start(state_file: str, name: str, unit: dict[str, Any]) -> int:
    if unit.get("fail_start"):
        print(f"Job for {name} failed because the control process exited with error code.", file=sys.stderr)
        unit["state"] = "failed"
        return 1
    if unit["state"] != "active" and unit.get("command"):
        log = open(Path(state_file).parent / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(unit["command"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        unit["pid"] = proc.pid
    unit["state"] = "active"
    return 0


def _unit_stop(state_file: str, name: str, unit: dict[str, Any]) -> int:
    pid = unit.get("pid")
    if unit.get("stop", "term") == "term" and pid and _alive(int(pid)):
        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while _alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
            while _alive(int(pid)):
                time.sleep(0.02)
    unit["state"] = "inactive"
    return 0


def _save(path: str, state: dict[str, dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "kube-apiserver":
        sys.exit(apiserver_main(sys.argv[2:]))
    print("usage: standins.py kube-apiserver --secure-port=N [--bind-address=H] [--ignore-sigterm]", file=sys.stderr)
    sys.exit(2)
