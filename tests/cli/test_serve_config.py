"""Bad configuration ends in one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.nodes import NodeProcess


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items()
            if k not in ("MODEL_PATH", "PORT", "DHT_PORT", "BOOTSTRAP_NODES")}
    return subprocess.run([sys.executable, "-m", "mesh", "--state-dir", str(cwd / "state"),
                           "--host", "127.0.0.1", *args],
                          cwd=cwd, env=base | (env or {}), capture_output=True, text=True,
                          timeout=60)


def _assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("llamamesh: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def not_a_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"this is not a model" * 10)
    return path


CASES: list[tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]] = [
    ("missing-file", lambda tmp, bad: ["--model-path", str(tmp / "nope.gguf")],
     ("model file not found", "nope.gguf")),
    ("not-a-gguf", lambda tmp, bad: ["--model-path", str(bad)], ("not a GGUF",)),
    ("directory", lambda tmp, bad: ["--model-path", str(tmp)], ("not a file",)),
    ("negative-ctx", lambda tmp, bad: ["--n-ctx", "-5"], ("--n-ctx/N_CTX",)),
    ("port-out-of-range", lambda tmp, bad: ["--port", "70000"], ("--port/PORT",)),
    ("port-not-a-number", lambda tmp, bad: ["--port", "eighty"], ("--port/PORT",)),
    ("bad-bootstrap", lambda tmp, bad: ["--bootstrap-nodes", "localhost"],
     ("--bootstrap-nodes/BOOTSTRAP_NODES", "host:port")),
    ("bad-bootstrap-port", lambda tmp, bad: ["--bootstrap-nodes", "10.0.0.1:0"],
     ("--bootstrap-nodes/BOOTSTRAP_NODES", "port")),
    ("negative-queue", lambda tmp, bad: ["--max-queue", "-1"], ("--max-queue/MAX_QUEUE",)),
    ("bad-log-level", lambda tmp, bad: ["--log-level", "LOUD"], ("--log-level/LOG_LEVEL",)),
    ("unknown-flag", lambda tmp, bad: ["--frobnicate", "1"], ("--frobnicate",)),
    ("wildcard-advertise", lambda tmp, bad: ["--advertise-host", "0.0.0.0"],
     ("--advertise-host",)),
]


@pytest.mark.parametrize(("name", "make_args", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_flag_exits_2_with_one_line(tmp_path: Path, not_a_gguf: Path, name: str,
                                        make_args: Callable[[Path, Path], list[str]],
                                        needles: tuple[str, ...]) -> None:
    _assert_one_line_exit_2(_run(make_args(tmp_path, not_a_gguf), tmp_path), *needles)


def test_bad_environment_value_exits_2(tmp_path: Path) -> None:
    result = _run([], tmp_path, env={"PORT": "not-a-port"})
    _assert_one_line_exit_2(result, "--port/PORT")


def test_dotenv_is_read_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("N_CTX=-1\n")
    _assert_one_line_exit_2(_run([], tmp_path), "--n-ctx/N_CTX")
    # The flag outranks .env: the bad .env value is never used, so the next
    # problem reported is the missing model file.
    result = _run(["--n-ctx", "64", "--model-path", str(tmp_path / "absent.gguf")], tmp_path)
    _assert_one_line_exit_2(result, "model file not found")


def test_unknown_chat_format(tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    result = _run(["--model-path", str(tiny_model("fmt")), "--chat-format", "klingon",
                   "--port", "0", "--dht-port", "0"], tmp_path)
    _assert_one_line_exit_2(result, "unknown chat format", "chatml")


def test_http_port_in_use(tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["--model-path", str(tiny_model("busy")), "--port", str(port),
                       "--dht-port", "0"], tmp_path)
    _assert_one_line_exit_2(result, f"HTTP port {port}", "already in use")


def test_help_lists_flags_with_env_names(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mesh", "--help"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    for flag, env in (("--model-path", "MODEL_PATH"), ("--bootstrap-nodes", "BOOTSTRAP_NODES"),
                      ("--heartbeat-interval", "HEARTBEAT_INTERVAL"), ("--n-gpu-layers",
                                                                       "N_GPU_LAYERS")):
        assert flag in result.stdout and env in result.stdout


def test_sigterm_exits_cleanly(start_node: Callable[..., NodeProcess],
                               tiny_model: Callable[..., Path]) -> None:
    node = start_node("--model-path", str(tiny_model("bye")))
    assert node.stop() == 0
    assert "Traceback" not in node.tail(200)
