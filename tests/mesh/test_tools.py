"""`llamamesh status|monitor|check` against the real swarm and against a dead address."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.mesh.conftest import Swarm


def llamamesh(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True,
                          timeout=timeout)


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_status_shows_every_node(swarm: Swarm) -> None:
    result = llamamesh("status", swarm.charlie.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"mesh via {swarm.charlie.url}: ")
    assert "alpha, charlie, shared" in lines[0]
    assert lines[2].split()[:4] == ["NODE", "URL", "MODELS", "QUEUE"]
    for node in swarm.nodes:
        row = next(line for line in lines if line.startswith(node.node_id[:12]))
        assert node.url in row and " ok " in row


def test_status_through_the_dht(swarm: Swarm) -> None:
    result = llamamesh("status", f"127.0.0.1:{swarm.alpha.dht_port}")
    assert result.returncode == 0, result.stderr
    for node in swarm.nodes:
        assert node.node_id[:12] in result.stdout


def test_monitor_refreshes_in_place(swarm: Swarm) -> None:
    result = llamamesh("monitor", swarm.alpha.url, "--interval", "0.2", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\x1b[H\x1b[2J") == 3
    assert result.stdout.count(swarm.fast.node_id[:12]) == 3


def test_check_ok_and_degraded(swarm: Swarm) -> None:
    ok = llamamesh("check", swarm.slow.url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: node ") and "3/3 peers healthy" in ok.stdout
    degraded = llamamesh("check", swarm.slow.url, "--min-healthy-peers", "10")
    assert degraded.returncode == 1
    assert degraded.stderr.startswith("degraded: ")


def test_tools_against_a_dead_address() -> None:
    url = dead_url()
    for command in ("status", "check"):
        result = llamamesh(command, url)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert url in result.stderr
    garbage = llamamesh("status", "not a target")
    assert garbage.returncode == 1 and "neither a node URL" in garbage.stderr
