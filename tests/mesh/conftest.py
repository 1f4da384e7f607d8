"""One swarm of real node processes shared by the mesh tests.

    alpha    tiny llama GGUF "alpha"      the seed every other node bootstraps from
    charlie  tiny llama GGUF "charlie"    the only provider of charlie
    fast     scripted "shared", 2 ms/token    two providers of one model,
    slow     scripted "shared", 15 ms/token   one clearly faster than the other

Tests that kill or add nodes start their own extra nodes joined to this swarm
(the `join` fixture), stopped when that test ends, so the shared four stay
intact for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nodes import NodeProcess, eventually, get_json_sync

SHARED_TOKENS = 30


@dataclass
class Swarm:
    alpha: NodeProcess
    charlie: NodeProcess
    fast: NodeProcess
    slow: NodeProcess

    @property
    def nodes(self) -> list[NodeProcess]:
        return [self.alpha, self.charlie, self.fast, self.slow]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.alpha.dht_port}"


def scripted(model: str, delay_ms: float, tokens: int = SHARED_TOKENS) -> tuple[str, ...]:
    return ("--engine", "scripted", "--model-name", model, "--scripted-delay-ms",
            str(delay_ms), "--scripted-tokens", str(tokens))


def routable(node: NodeProcess, model: str, node_id: str) -> bool:
    """Does `node` list `node_id` as a healthy provider of `model`?"""
    catalog = get_json_sync(node.url + "/v1/models/network")
    return any(p["node_id"] == node_id and p["healthy"]
               for m in catalog["data"] if m["id"] == model for p in m["providers"])


@pytest.fixture(scope="session")
def swarm(tmp_path_factory: pytest.TempPathFactory,
          tiny_model: Callable[..., Path]) -> Iterator[Swarm]:
    started: list[NodeProcess] = []

    def start(*args: str, name: str, bootstrap: str | None = None) -> NodeProcess:
        extra = ("--bootstrap-nodes", bootstrap) if bootstrap else ()
        node = NodeProcess(state_dir=tmp_path_factory.mktemp(name),
                           args=(*args, *extra, "--heartbeat-interval", "2"))
        started.append(node)
        return node.start()

    alpha = start("--model-path", str(tiny_model("alpha")), name="alpha")
    seed = f"127.0.0.1:{alpha.dht_port}"
    charlie = start("--model-path", str(tiny_model("charlie")), name="charlie", bootstrap=seed)
    fast = start(*scripted("shared", 2), name="fast", bootstrap=seed)
    slow = start(*scripted("shared", 15), name="slow", bootstrap=seed)

    result = Swarm(alpha=alpha, charlie=charlie, fast=fast, slow=slow)
    for node in result.nodes:
        for other in result.nodes:
            if other is not node:
                model = {"alpha": "alpha", "charlie": "charlie"}.get(
                    other.info["model"], "shared")  # type: ignore[arg-type]
                eventually(lambda n=node, o=other, m=model: routable(n, m, o.node_id),
                           timeout=20, message=f"{node.node_id[:8]} routes to {other.node_id[:8]}")
    try:
        yield result
    finally:
        for node in started:
            node.stop(timeout=5)


@pytest.fixture
def join(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Callable[..., NodeProcess]]:
    """Start extra nodes joined to the shared swarm; stopped when the test ends."""
    extra: list[NodeProcess] = []

    def start(*args: str, name: str = "extra") -> NodeProcess:
        node = NodeProcess(state_dir=tmp_path_factory.mktemp(name), args=(
            *args, "--bootstrap-nodes", swarm.bootstrap, "--heartbeat-interval", "2"))
        extra.append(node)
        return node.start()

    yield start
    for node in extra:
        node.stop(timeout=5)
