"""mesh.client.Client against the real swarm: discovery, generation, streaming, failover."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mesh.client import Client, ClientError
from tests.mesh.conftest import Swarm, routable, scripted
from tests.support.nodes import NodeProcess, eventually


async def test_generate_chat_and_stream_through_any_node(swarm: Swarm) -> None:
    async with Client(base_url=swarm.alpha.url) as client:
        nodes = await client.dht_discovery.get_nodes()
        assert {n.node_id for n in nodes} >= {n.node_id for n in swarm.nodes}
        answer = await client.generate(prompt="hello", max_tokens=4, model="charlie")
        assert answer.node_id == swarm.charlie.node_id
        assert answer.text and answer.tokens_generated == 4 and answer.model == "charlie"
        chat = await client.chat([{"role": "user", "content": "hi"}], max_tokens=3,
                                 model="alpha")
        assert chat.node_id == swarm.alpha.node_id and chat.route == "local"
        pieces = [p async for p in client.stream("x", model="shared", max_tokens=5)]
        assert pieces == [f" tok{i}" for i in range(5)]
        chat_pieces = [p async for p in client.stream(
            messages=[{"role": "user", "content": "x"}], model="charlie", max_tokens=3)]
        assert chat_pieces


async def test_unknown_model_is_a_client_error(swarm: Swarm) -> None:
    async with Client(base_url=swarm.slow.url) as client:
        with pytest.raises(ClientError) as error:
            await client.generate(prompt="x", model="missing-model")
    assert error.value.status == 404 and error.value.code == "model_not_found"


async def test_client_fails_over_when_a_provider_dies(
        swarm: Swarm, join: Callable[..., NodeProcess]) -> None:
    first = join(*scripted("flaky", 1, tokens=2), name="flaky1")
    second = join(*scripted("flaky", 1, tokens=2), name="flaky2")
    for provider in (first, second):
        eventually(lambda p=provider: routable(swarm.alpha, "flaky", p.node_id), timeout=10,
                   message="both flaky providers routable")
    async with Client(base_url=swarm.alpha.url, model="flaky") as client:
        await client.dht_discovery.get_nodes()
        first.kill()
        for _ in range(10):
            answer = await client.generate(prompt="x", max_tokens=2)
            assert answer.node_id == second.node_id


async def test_client_survives_its_base_node_dying(
        swarm: Swarm, join: Callable[..., NodeProcess]) -> None:
    gateway = join(*scripted("gateway-only", 1, tokens=2), name="gateway")
    eventually(lambda: routable(gateway, "charlie", swarm.charlie.node_id), timeout=10,
               message="gateway sees charlie")
    async with Client(base_url=gateway.url) as client:
        await client.dht_discovery.get_nodes()  # learns the other nodes
        gateway.kill()
        answer = await client.generate(prompt="x", max_tokens=2, model="charlie")
        assert answer.node_id == swarm.charlie.node_id


async def test_client_joins_the_dht_to_find_nodes(swarm: Swarm) -> None:
    async with Client(bootstrap_nodes=f"127.0.0.1:{swarm.alpha.dht_port}") as client:
        nodes = await client.dht_discovery.get_nodes()
        assert {n.node_id for n in nodes} >= {n.node_id for n in swarm.nodes}
        assert all(n.healthy for n in nodes if n.node_id == swarm.charlie.node_id)
        answer = await client.generate(prompt="x", max_tokens=2, model="charlie")
        assert answer.node_id == swarm.charlie.node_id
        assert answer.route == "local"  # the client went straight to the provider
