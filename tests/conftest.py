"""Shared fixtures: real node processes on 127.0.0.1, real GGUF models.

One node on the bundled Gemma 3 270M serves every test that needs real text;
tests that must change a node's configuration start their own, on tiny
GGUFs written with the `gguf` package, which load in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.support.nodes import NodeProcess
from tests.support.tiny_gguf import write_tiny_gguf

GEMMA_ID = "gemma-3-270m"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`tiny_model("name")` → a tiny llama GGUF whose model id is `name`."""
    directory = tmp_path_factory.mktemp("models")

    def make(name: str, *, with_chat_template: bool = True) -> Path:
        path = directory / f"{name}.gguf"
        if not path.exists():
            write_tiny_gguf(path, name=name, with_chat_template=with_chat_template, n_ctx=512)
        return path

    return make


@pytest.fixture
def start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NodeProcess]]:
    """Start node processes that are stopped (SIGKILL if stuck) when the test ends."""
    started: list[NodeProcess] = []

    def start(*args: str, name: str = "node", timeout: float = 60.0) -> NodeProcess:
        node = NodeProcess(state_dir=tmp_path_factory.mktemp(name), args=args)
        started.append(node)
        return node.start(timeout=timeout)

    yield start
    for node in started:
        node.stop(timeout=5)


@pytest.fixture(scope="session")
def gemma_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """The bundled default model, started with no --model-path, as a user would.

    max_queue 1 so the queue-full test needs only two slow requests.
    """
    node = NodeProcess(state_dir=tmp_path_factory.mktemp("gemma"), args=("--max-queue", "1"))
    node.start(timeout=120)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def gemma(gemma_node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gemma_node.url + "/v1", api_key="unused", max_retries=0,
                         timeout=60)
