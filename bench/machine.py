"""What a result was measured on: cores, load, CPU model, versions, commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mesh"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() or None
    if commit and dirty.stdout.strip():
        commit += "+dirty(mesh/)"
    return commit


def machine_info() -> dict[str, object]:
    """Describe the machine now; call again at the end to see how the load moved."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1_5_15": load_average(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "commit": _commit(),
        "versions": {name: _version(name) for name in
                     ("aiohttp", "uvloop", "llama_cpp_python", "kademlia", "pydantic")},
    }


def _cpu_busy_share(interval_s: float) -> float:
    """Share of all CPUs busy (not idle/iowait) over interval_s, from /proc/stat."""
    def read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle
    total0, idle0 = read()
    time.sleep(interval_s)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_quiet(*, max_busy: float = 0.15, timeout_s: float = 90.0) -> dict[str, float]:
    """Before a noise-sensitive measurement: wait (bounded) until the machine is
    mostly idle; return how long we waited and how busy it was when we went."""
    started = time.monotonic()
    busy = _cpu_busy_share(1.0)
    while busy > max_busy and time.monotonic() - started < timeout_s:
        busy = _cpu_busy_share(1.0)
    return {"waited_s": round(time.monotonic() - started, 1), "busy_share": round(busy, 3)}
