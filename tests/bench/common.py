"""Shared pieces of the benchmarks: timing, peak RSS of a child process, result files."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def rss_kib(pid: int, field: str = "VmHWM") -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Run:
    seconds: float
    peak_rss_mib: Optional[float]
    returncode: int
    stdout: str
    stderr: str


def run_measured(argv: Sequence[str], env: Optional[dict[str, str]] = None) -> Run:
    """Run a command; wall time and the peak RSS (VmHWM, polled until exit) of the process."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            value = rss_kib(proc.pid)
            if value:
                peak = max(peak, value)
            stop.wait(0.02)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    t.join()
    return Run(seconds, round(peak / 1024, 1) if peak else None, proc.returncode, out, err)


def timed(argv: Sequence[str], env: Optional[dict[str, str]] = None) -> float:
    started = time.perf_counter()
    subprocess.run(list(argv), check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def spread(values: Sequence[float]) -> dict[str, Optional[float]]:
    """Median and range of a measurement's runs."""
    if not values:
        return {"median": None, "min": None, "max": None}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"median": round(median, 3), "min": round(ordered[0], 3), "max": round(ordered[-1], 3)}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
