"""Real node processes for tests: `python -m mesh` on 127.0.0.1, ports chosen by the OS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], T | None], *, timeout: float, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the condition may not be reachable yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s (last error: {last_error!r})")


async def async_eventually(check: Callable[[], object], *, timeout: float,
                           interval: float = 0.05, message: str = "condition") -> object:
    import asyncio

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if hasattr(result, "__await__"):
                result = await result  # type: ignore[misc]
            if result:
                return result
        except Exception as exc:  # noqa: BLE001
            last_error = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s (last error: {last_error!r})")


@dataclass
class NodeProcess:
    """One `python -m mesh` process. `url` is known once `start()` returns."""

    state_dir: Path
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)

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
    def log_path(self) -> Path:
        return self.state_dir / "node.log"

    def start(self, *, timeout: float = 60.0) -> NodeProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        command = [sys.executable, "-m", "mesh", "--host", "127.0.0.1", "--port", "0",
                   "--dht-port", "0", "--state-dir", str(self.state_dir),
                   "--ready-file", str(ready), *self.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_ENV)}
        env |= {"PYTHONUNBUFFERED": "1"} | self.env
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(command, cwd=self.state_dir, env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def is_ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.tail()}")
            return ready.exists()

        deadline = time.monotonic() + timeout
        while not is_ready():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"node not ready in {timeout}s: {self.tail()}")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
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

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: the clean shutdown path."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None


# Environment variables that would leak a developer's configuration into tests.
_SETTINGS_ENV = ("MODEL_PATH", "PORT", "DHT_PORT", "NODE_ID", "BOOTSTRAP_NODES", "HOST",
                 "MODEL_NAME", "N_CTX", "ADVERTISE_HOST", "LOG_LEVEL", "MAX_QUEUE")


def get_json_sync(url: str, timeout: float = 5.0) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())
