"""Fixtures for DHT tests: swarms of real Discovery nodes on 127.0.0.1, OS-chosen ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from mesh.dht.discovery import Discovery
from mesh.dht.records import NodeRecord
from tests.dht.support import make_record

# Short enough that expiry tests finish in ~2 s, long enough for a loaded 2-core box.
HEARTBEAT = 0.5
TTL = 1.6
RPC_TIMEOUT = 0.3

StartNode = Callable[..., Awaitable[Discovery]]


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """start_node(node_id, models=..., bootstrap=..., source=..., **Discovery kwargs) -> started node."""
    started: list[Discovery] = []

    async def start(
        node_id: str,
        *,
        models: tuple[str, ...] = ("m",),
        bootstrap: Sequence[tuple[str, int]] = (),
        source: Callable[[], NodeRecord] | None = None,
        **kwargs: object,
    ) -> Discovery:
        options: dict[str, object] = {
            "listen_host": "127.0.0.1",
            "port": 0,
            "heartbeat_interval": HEARTBEAT,
            "entry_ttl": TTL,
            "rpc_timeout": RPC_TIMEOUT,
        }
        options.update(kwargs)
        node = Discovery(node_id=node_id, bootstrap=bootstrap, **options)  # type: ignore[arg-type]
        http_port = 9000 + len(started)
        await node.start(source or (lambda: make_record(node_id, port=http_port, models=models)))
        started.append(node)
        return node

    yield start
    # Together: one by one, each withdraw would wait out the nodes already gone.
    await asyncio.gather(*(node.stop() for node in started))


@pytest.fixture
async def swarm(start_node: StartNode) -> list[Discovery]:
    """Five nodes serving model "m", all bootstrapped through the first."""
    seed = await start_node("node-0")
    nodes = [seed]
    for i in range(1, 5):
        nodes.append(await start_node(f"node-{i}", bootstrap=[("127.0.0.1", seed.port)]))
    return nodes
