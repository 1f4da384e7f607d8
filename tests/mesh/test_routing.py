"""Every node is a gateway: the OpenAI SDK pointed at any node reaches every model."""

from __future__ import annotations

import asyncio
import collections
import json

import aiohttp
import openai
import pytest

from tests.mesh.conftest import SHARED_TOKENS, Swarm
from tests.support.nodes import NodeProcess, eventually, get_json_sync

HELLO = [{"role": "user", "content": "hello"}]


def client(node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_model_on_one_node_served_through_another(swarm: Swarm) -> None:
    raw = client(swarm.alpha).chat.completions.with_raw_response.create(
        model="charlie", messages=HELLO, max_tokens=4)
    answer = raw.parse()
    assert raw.headers["x-mesh-node"] == swarm.charlie.node_id
    route = raw.headers["x-mesh-route"]
    assert route.startswith("peer; attempts=1") and swarm.alpha.node_id in route
    assert answer.model == "charlie"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def test_streamed_through_a_gateway(swarm: Swarm) -> None:
    with client(swarm.charlie).chat.completions.with_streaming_response.create(
            model="alpha", messages=HELLO, max_tokens=4, stream=True,
            stream_options={"include_usage": True}) as response:
        assert response.headers["x-mesh-node"] == swarm.alpha.node_id
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_text_completion_through_a_gateway(swarm: Swarm) -> None:
    raw = client(swarm.fast).completions.with_raw_response.create(
        model="charlie", prompt="hi", max_tokens=3)
    assert raw.headers["x-mesh-node"] == swarm.charlie.node_id
    assert raw.parse().choices[0].text


def test_every_node_lists_every_model(swarm: Swarm) -> None:
    for node in swarm.nodes:
        # Nodes another test just stopped leave the list at their first failed probe.
        eventually(lambda n=node: [m.id for m in client(n).models.list().data] == [
            "alpha", "charlie", "shared"], timeout=5, message="exactly the swarm's models")
        catalog = get_json_sync(node.url + "/v1/models/network")
        # Other tests' killed nodes may linger here, unhealthy, until their DHT entries expire.
        providers = {m["id"]: sorted(p["node_id"] for p in m["providers"])
                     for m in catalog["data"] if m["id"] in ("alpha", "charlie", "shared")}
        assert providers == {
            "alpha": [swarm.alpha.node_id], "charlie": [swarm.charlie.node_id],
            "shared": sorted([swarm.fast.node_id, swarm.slow.node_id])}
        for model in catalog["data"]:
            if model["id"] not in providers:
                continue
            for provider in model["providers"]:
                assert provider["url"].startswith("http://127.0.0.1:")
                assert provider["healthy"] is True


def test_unknown_model_is_404_from_any_node(swarm: Swarm) -> None:
    for node in (swarm.alpha, swarm.slow):
        with pytest.raises(openai.NotFoundError) as error:
            client(node).chat.completions.create(model="no-such-model", messages=HELLO)
        assert error.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_bad_strategy_is_400(swarm: Swarm) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client(swarm.alpha).chat.completions.create(
            model="charlie", messages=HELLO, extra_body={"strategy": "cheapest"})
    assert "load_balanced" in error.value.body["message"]  # type: ignore[index]


def test_strategy_header_is_validated_too(swarm: Swarm) -> None:
    with pytest.raises(openai.BadRequestError):
        client(swarm.alpha).chat.completions.create(
            model="charlie", messages=HELLO, extra_headers={"X-Mesh-Strategy": "random"})


def test_local_strategy(swarm: Swarm) -> None:
    raw = client(swarm.fast).chat.completions.with_raw_response.create(
        model="shared", messages=HELLO, max_tokens=2, extra_body={"strategy": "local"})
    assert raw.headers["x-mesh-node"] == swarm.fast.node_id
    assert raw.headers["x-mesh-route"] == "local"
    with pytest.raises(openai.BadRequestError) as error:
        client(swarm.alpha).chat.completions.create(
            model="charlie", messages=HELLO, extra_body={"strategy": "local"})
    assert error.value.body["code"] == "model_not_local"  # type: ignore[index]


def test_fastest_strategy_picks_the_faster_provider(swarm: Swarm) -> None:
    # Give both providers a measured speed, then let the probes carry it to alpha.
    for node in (swarm.fast, swarm.slow):
        client(node).completions.create(model="shared", prompt="warm up", max_tokens=20,
                                        extra_body={"strategy": "local"})

    def speeds_known() -> bool:
        catalog = get_json_sync(swarm.alpha.url + "/v1/models/network")
        shared = next(m for m in catalog["data"] if m["id"] == "shared")
        return all(p["tokens_per_second"] > 0 for p in shared["providers"])

    from tests.support.nodes import eventually
    eventually(speeds_known, timeout=10, message="provider speeds reach alpha")
    served = collections.Counter(
        client(swarm.alpha).completions.with_raw_response.create(
            model="shared", prompt="x", max_tokens=2, extra_body={"strategy": "fastest"}
        ).headers["x-mesh-node"] for _ in range(5))
    assert served == {swarm.fast.node_id: 5}


async def test_load_balanced_spreads_concurrent_requests(swarm: Swarm) -> None:
    """Twelve concurrent streams through charlie: both providers of `shared` take some."""
    body = json.dumps({"model": "shared", "prompt": "x", "max_tokens": SHARED_TOKENS})

    async def one(session: aiohttp.ClientSession) -> str:
        async with session.post(swarm.charlie.url + "/v1/completions", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200, await response.text()
            await response.read()
            return response.headers["X-Mesh-Node"]

    async with aiohttp.ClientSession() as session:
        served = collections.Counter(await asyncio.gather(*(one(session) for _ in range(12))))
    assert set(served) == {swarm.fast.node_id, swarm.slow.node_id}, served
    assert min(served.values()) >= 2, served


async def test_forwarded_request_is_never_forwarded_again(swarm: Swarm) -> None:
    """A request carrying the hop header is served where it lands, or fails there."""
    async with aiohttp.ClientSession() as session:
        async with session.post(swarm.charlie.url + "/v1/chat/completions", json={
                "model": "alpha", "messages": HELLO, "max_tokens": 2},
                headers={"X-Mesh-Via": "some-other-node"}) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "model_not_found"
        async with session.post(swarm.charlie.url + "/v1/chat/completions", json={
                "model": "charlie", "messages": HELLO, "max_tokens": 2},
                headers={"X-Mesh-Via": "some-other-node"}) as response:
            assert response.status == 200
            assert response.headers["X-Mesh-Route"] == "local"


def test_dht_status_and_mesh_view(swarm: Swarm) -> None:
    status = get_json_sync(swarm.charlie.url + "/dht/status")
    assert status["bootstrapped"] is True
    assert status["routing_table_size"] >= 3
    assert f"model:charlie" in status["keys_published"]
    assert status["last_publish_at"] is not None
    node_status = get_json_sync(swarm.charlie.url + "/status")
    assert node_status["peers_known"] >= 3 and node_status["peers_healthy"] >= 3
    assert {"alpha", "charlie", "shared"} <= set(node_status["mesh_models"])
