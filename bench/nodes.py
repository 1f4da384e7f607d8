"""Processes the benchmarks start: mesh nodes (`python -m mesh`) and references.

Everything binds 127.0.0.1 with OS-chosen ports. A node reports its URL, DHT
port and id through `--ready-file`; every process is stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

# Settings environment variables that would leak a developer's configuration in.
_SETTINGS_ENV = ("MODEL_PATH", "PORT", "DHT_PORT", "NODE_ID", "BOOTSTRAP_NODES", "HOST",
                 "MODEL_NAME", "N_CTX", "ADVERTISE_HOST", "LOG_LEVEL", "MAX_QUEUE",
                 "N_THREADS", "HEARTBEAT_INTERVAL", "STATE_DIR")


def clean_env(extra: dict[str, str] | None = None, *, mesh_root: Path | None = None) -> dict[str, str]:
    """The environment for a child: no LlamaMesh settings leaking in, this repo
    importable, and `mesh_root` (a patched checkout) ahead of it when given."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    roots = [str(_mesh_only(mesh_root))] if mesh_root else []
    roots.append(str(ROOT))
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    return env | (extra or {})


def _mesh_only(checkout: Path) -> Path:
    """A directory holding only `mesh` (a link to checkout/mesh): on sys.path it
    swaps in that checkout's mesh/ without also shadowing this bench/."""
    import hashlib

    shim = ROOT / "bench" / "out" / ".mesh-roots" / hashlib.sha1(
        str(checkout.resolve()).encode()).hexdigest()[:12]
    link = shim / "mesh"
    if not link.is_symlink():
        shim.mkdir(parents=True, exist_ok=True)
        link.symlink_to(checkout.resolve() / "mesh", target_is_directory=True)
    return shim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scripted_args(model: str, *, tokens: int = 64, delay_ms: float = 0.0) -> list[str]:
    return ["--engine", "scripted", "--model-name", model, "--scripted-tokens", str(tokens),
            "--scripted-delay-ms", str(delay_ms)]


@dataclass
class Node:
    """One node process. `module` is `mesh` (stock) or `bench.concurrent_node`."""

    state_dir: Path
    args: Sequence[str] = ()
    module: str = "mesh"
    mesh_root: Path | None = None  # run this checkout's mesh/ instead of ours
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)
    spawned_at: float = 0.0  # time.monotonic() at Popen
    ready_at: float = 0.0  # time.monotonic() when the ready file was seen

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    @property
    def dht_port(self) -> int:
        return int(self.info["dht_port"])  # type: ignore[call-overload]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "ready.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "node.log"

    def spawn(self) -> Node:
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", self.module, "--host", "127.0.0.1", "--port", "0",
                   "--dht-port", "0", "--state-dir", str(self.state_dir),
                   "--ready-file", str(self.ready_file), *self.args]
        with self.log_path.open("ab") as log:
            self.spawned_at = time.monotonic()
            self.proc = subprocess.Popen(command, cwd=self.state_dir,
                                         env=clean_env(mesh_root=self.mesh_root),
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def poll_ready(self) -> bool:
        if self.info:
            return True
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"node exited with {self.proc.returncode}: {self.tail()}")
        if not self.ready_file.exists():
            return False
        self.ready_at = time.monotonic()
        self.info = json.loads(self.ready_file.read_text())
        return True

    def wait_ready(self, timeout: float = 90.0) -> Node:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node not ready in {timeout}s: {self.tail()}")
            time.sleep(0.02)
        return self

    def start(self, timeout: float = 90.0) -> Node:
        return self.spawn().wait_ready(timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the swarm."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_nodes(nodes: Sequence[Node], timeout: float = 120.0) -> None:
    """Spawn all, then wait for all: parallel start."""
    for node in nodes:
        node.spawn()
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        pending = [n for n in pending if not n.poll_ready()]
        if pending and time.monotonic() > deadline:
            for node in nodes:
                node.kill()
            raise RuntimeError(f"{len(pending)} nodes not ready in {timeout}s: {pending[0].tail()}")
        time.sleep(0.05)


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return json.loads(response.read())


def wait_until(check, *, timeout: float, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not reachable yet
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"{message} not met within {timeout}s (last error: {last!r})")


def routes_to(observer: Node, model: str, node_id: str) -> bool:
    catalog = get_json(observer.url + "/v1/models/network")
    return any(p["node_id"] == node_id and p["healthy"] and not p["local"]
               for m in catalog["data"] if m["id"] == model for p in m["providers"])


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds these processes have run (all their threads; children not included).

    Nanosecond-precise from /proc/<pid>/task/*/schedstat where Linux has it (a
    psutil `cpu_times()` delta moves in 10 ms ticks: too coarse for ~1 ms per
    stream); psutil otherwise. Threads that exit between two readings take
    their time with them, so compare readings of long-lived processes only.
    """
    total = 0.0
    for pid in pids:
        total += _schedstat_seconds(pid)
    return total


def _schedstat_seconds(pid: int) -> float:
    tasks = Path(f"/proc/{pid}/task")
    try:
        names = os.listdir(tasks)
    except OSError:
        names = None
    if names is not None:
        total_ns = 0
        for name in names:
            try:
                total_ns += int((tasks / name / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        if total_ns:
            return total_ns / 1e9
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


def rss_mib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


@dataclass
class Proc:
    """A reference process (nginx, a bare proxy, llama-server) we started."""

    command: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(list(self.command), cwd=self.cwd, env=clean_env(self.env),
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and its children (nginx's workers)."""
        try:
            parent = psutil.Process(self.pid)
            return [self.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_http(url: str, *, timeout: float, proc: Proc | None = None) -> None:
    """Until GET url answers (any status below 500)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.command[0]} exited: {proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 - loopback only
                if r.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering in {timeout}s" + (f": {proc.tail()}" if proc else ""))
