"""deploy/: the local swarm runs for real; Docker and systemd files are checked
as far as a machine without a Docker engine can check them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from mesh.errors import StartupError
from mesh.node import gpu_layers
from mesh.settings import Settings
from tests.support.nodes import eventually

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _free_base_port(span: int = 6) -> int:
    for base in range(20000 + os.getpid() % 20000, 60000, 97):
        try:
            for offset in range(span):
                with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                    tcp.bind(("127.0.0.1", base + offset))
                    udp.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def test_local_swarm_starts_and_stops_three_nodes(tmp_path: Path) -> None:
    base = _free_base_port()
    script = subprocess.Popen(
        [str(DEPLOY / "local-swarm"), "3", "--base-port", str(base), "--state-dir",
         str(tmp_path), "--engine", "scripted", "--model-name", "swarm-test",
         "--heartbeat-interval", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ | {"PYTHON": sys.executable})
    try:
        assert script.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline:
            line = script.stdout.readline()
            if not line:
                break
            lines.append(line)
        urls = re.findall(r"node \d: (http://\S+)", "".join(lines))
        assert urls == [f"http://127.0.0.1:{base + 2 * i}" for i in range(3)], lines

        def all_see_three() -> bool:
            for url in urls:
                with urllib.request.urlopen(url + "/v1/models/network", timeout=3) as r:
                    if json.loads(r.read())["healthy_nodes"] != 3:
                        return False
            return True

        eventually(all_see_three, timeout=20, message="every swarm node sees all three")
        script.send_signal(signal.SIGINT)
        assert script.wait(30) == 0
    finally:
        if script.poll() is None:
            script.kill()
    for offset in range(0, 6, 2):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", base + offset)) != 0, "a node outlived the swarm"


def test_local_swarm_needs_a_count() -> None:
    result = subprocess.run([str(DEPLOY / "local-swarm")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize(("mode", "layers", "gpu", "expected"), [
    ("cpu", None, True, 0),
    ("cpu", 20, True, 0),
    ("auto", None, True, -1),
    ("auto", 12, True, 12),
    ("auto", None, False, 0),
    ("auto", 12, False, 0),
    ("gpu", None, True, -1),
    ("gpu", 33, True, 33),
])
def test_hardware_mode_sets_gpu_layers(mode: str, layers: int | None, gpu: bool,
                                       expected: int) -> None:
    settings = Settings(hardware_mode=mode, n_gpu_layers=layers)  # type: ignore[arg-type]
    assert gpu_layers(settings, gpu) == expected


def test_gpu_mode_without_gpu_build_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="without GPU offload"):
        gpu_layers(Settings(hardware_mode="gpu"), False)


def _settings_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def test_compose_file_is_a_three_node_mesh() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert sorted(services) == ["node1", "node2", "node3"]
    known = _settings_env_names() | {"VARIANT"}
    for name, service in services.items():
        env = service["environment"]
        assert set(env) <= known, set(env) - known
        assert env["ADVERTISE_HOST"] == name
        assert any(port.endswith(":8001/udp") for port in service["ports"]), "DHT port is UDP"
        assert any(port.endswith(":8000/tcp") for port in service["ports"])
        assert all(volume.endswith(":ro") for volume in service["volumes"]), "models read-only"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        if name != "node1":
            assert env["BOOTSTRAP_NODES"] == "node1:8001"
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        result = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"),
                                 "config", "--quiet"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_dockerfile_builds_cpu_and_cuda_and_checks_health() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text and "FROM base-${VARIANT} AS node" in text
    assert "FROM python:3.11" in text and "-DGGML_CUDA=on" in text
    assert "EXPOSE 8000/tcp 8001/udp" in text
    assert re.search(r"HEALTHCHECK .*\n\s+CMD llamamesh check", text)
    for copied in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / copied).exists(), copied
    for env in re.findall(r"\b([A-Z_]+)=", text.split("ENV HOST", 1)[1].splitlines()[0]):
        assert env in _settings_env_names() or env == "HOST"


def test_systemd_unit_and_env_file() -> None:
    env_names = {line.split("=", 1)[0].lstrip("# ")
                 for line in (DEPLOY / "systemd" / "llamamesh.env").read_text().splitlines()
                 if "=" in line and not line.startswith("# /etc")}
    assert env_names <= _settings_env_names(), env_names - _settings_env_names()
    unit = (DEPLOY / "systemd" / "llamamesh.service").read_text()
    assert "EnvironmentFile=/etc/llamamesh.env" in unit
    assert "ExecStart=/usr/local/bin/llamamesh serve" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = subprocess.run([analyze, "verify", "--man=no",
                                 str(DEPLOY / "systemd" / "llamamesh.service")],
                                capture_output=True, text=True)
        # Only syntax problems count here: the binary and user do not exist on this machine.
        problems = [line for line in result.stderr.splitlines()
                    if "Unknown" in line or "Invalid" in line or "Failed to parse" in line]
        assert problems == [], result.stderr
