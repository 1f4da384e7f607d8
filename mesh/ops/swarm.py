"""`llamamesh swarm N`: N nodes on this machine, no Docker, stopped together.

Node i listens on HTTP base+2i and DHT base+2i+1; node 0 is the seed the
others bootstrap from. Extra flags go to every node unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

READY_TIMEOUT_S = 180.0


class SwarmError(Exception):
    """A node did not come up; the message is one line."""


def run_swarm(count: int, *, base_port: int, host: str, state_dir: Path,
              node_args: Sequence[str]) -> int:
    nodes: list[tuple[subprocess.Popen[bytes], Path]] = []
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for index in range(count):
            http_port, dht_port = base_port + 2 * index, base_port + 2 * index + 1
            node_dir = state_dir / "swarm" / f"node-{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            ready = node_dir / "ready.json"
            ready.unlink(missing_ok=True)
            command = [sys.executable, "-m", "mesh", "--host", host, "--port", str(http_port),
                       "--dht-port", str(dht_port), "--state-dir", str(state_dir),
                       "--ready-file", str(ready), *node_args]
            if index:
                seed_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
                command += ["--bootstrap-nodes", f"{seed_host}:{base_port + 1}"]
            log = (node_dir / "node.log").open("ab")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            log.close()
            nodes.append((process, ready))
        infos = [_wait_ready(process, ready, stop) for process, ready in nodes]
        print(f"llamamesh swarm: {count} nodes up (logs in {state_dir / 'swarm'})")
        for index, info in enumerate(infos):
            print(f"  node {index}: {info['url']}  model {info['model']}  "
                  f"id {str(info['node_id'])[:12]}  dht {info['dht_port']}")
        print("Ctrl-C (or SIGTERM) stops them all.", flush=True)
        while not stop["now"]:
            for index, (process, _) in enumerate(nodes):
                if process.poll() is not None:
                    raise SwarmError(f"node {index} exited with status {process.returncode}")
            time.sleep(0.2)
        return 0
    finally:
        _stop_all([process for process, _ in nodes])


def _wait_ready(process: subprocess.Popen[bytes], ready: Path,
                stop: dict[str, bool]) -> dict[str, object]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if process.poll() is not None:
            log = ready.parent / "node.log"
            last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            raise SwarmError(f"a node exited with status {process.returncode}: "
                             f"{last[0] if last else 'no output'}")
        if stop["now"] or time.monotonic() > deadline:
            raise SwarmError("stopped before every node was ready")
        time.sleep(0.1)
    return json.loads(ready.read_text())


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
