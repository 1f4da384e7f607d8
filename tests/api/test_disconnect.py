"""A client that goes away frees the engine; the node keeps serving."""

from __future__ import annotations

import json
import time

import aiohttp
import openai

from tests.conftest import GEMMA_ID
from tests.support.nodes import NodeProcess, async_eventually


async def _health(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/health") as response:
        return await response.json()


async def _status(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/status") as response:
        return await response.json()


async def test_disconnect_mid_stream_stops_generation(gemma_node: NodeProcess,
                                                      gemma: openai.OpenAI) -> None:
    url = gemma_node.url
    body = {"model": GEMMA_ID, "prompt": "Write a very long essay about the ocean.",
            "max_tokens": 1500, "stream": True, "temperature": 0}
    async with aiohttp.ClientSession() as session:
        before = await _status(session, url)
        async with aiohttp.ClientSession() as client:
            response = await client.post(url + "/v1/completions", data=json.dumps(body),
                                         headers={"Content-Type": "application/json"})
            assert response.status == 200
            await response.content.readuntil(b"\n\n")  # a token has been generated
            assert (await _health(session, url))["active_requests"] == 1
            response.close()  # drop the connection mid-stream
        dropped_at = time.monotonic()

        async def idle() -> bool:
            return (await _health(session, url))["active_requests"] == 0

        await async_eventually(idle, timeout=5, message="engine freed after disconnect")
        freed_after = time.monotonic() - dropped_at
        after = await _status(session, url)
    # 1,500 tokens would take most of a minute: the engine stopped, it did not finish.
    assert freed_after < 5
    assert after["requests_cancelled"] == before["requests_cancelled"] + 1
    assert after["completion_tokens_total"] - before["completion_tokens_total"] < 300
    answer = gemma.completions.create(model=GEMMA_ID, prompt="Hello", max_tokens=2)
    assert answer.choices[0].text is not None


async def test_disconnect_while_queued_leaves_the_queue(gemma_node: NodeProcess) -> None:
    url = gemma_node.url
    slow = json.dumps({"model": GEMMA_ID, "prompt": "Count:", "max_tokens": 60})
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        running = await session.post(url + "/v1/completions", data=json.dumps(
            {"model": GEMMA_ID, "prompt": "Count:", "max_tokens": 60, "stream": True}),
            headers=headers)
        await running.content.readuntil(b"\n\n")
        async with aiohttp.ClientSession() as impatient:
            waiting = impatient.post(url + "/v1/completions", data=slow, headers=headers)
            import asyncio
            task = asyncio.ensure_future(waiting)

            async def queued() -> bool:
                return (await _health(session, url))["queue_depth"] == 1

            await async_eventually(queued, timeout=5, message="second request queued")
            task.cancel()
        async def queue_empty() -> bool:
            return (await _health(session, url))["queue_depth"] == 0

        await async_eventually(queue_empty, timeout=5, message="queued request left")
        running.close()
