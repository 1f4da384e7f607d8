"""A node on a GGUF that carries its own chat template, with ids from metadata."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import openai

from tests.support.nodes import NodeProcess


def test_model_id_from_metadata_and_template_chat(start_node: Callable[..., NodeProcess],
                                                  tiny_model: Callable[..., Path]) -> None:
    node = start_node("--model-path", str(tiny_model("Tiny Test Model")))
    client = openai.OpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-test-model"]
    chunks = list(client.chat.completions.create(
        model="tiny-test-model", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        stream=True))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 1
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_model_name_flag_and_native_endpoints(start_node: Callable[..., NodeProcess],
                                                    tiny_model: Callable[..., Path]) -> None:
    node = start_node("--model-path", str(tiny_model("plain", with_chat_template=False)),
                      "--model-name", "Office Helper v2", "--n-ctx", "256")
    async with aiohttp.ClientSession() as session:
        async with session.get(node.url + "/v1/models/office-helper-v2") as response:
            assert response.status == 200
        async with session.get(node.url + "/info") as response:
            info = await response.json()
        assert info["model"]["id"] == "office-helper-v2"
        assert info["model"]["architecture"] == "llama"
        assert info["model"]["chat_format"] == "llama-2"  # picked from the architecture
        assert info["model"]["n_ctx"] == 256
        async with session.get(node.url + "/hardware") as response:
            hardware = await response.json()
        assert hardware["node_id"] == node.node_id and hardware["cpu_count"] >= 1
        async with session.get(node.url + "/hardware/validate") as response:
            assert (await response.json())["consistent"] is True
        async with session.get(node.url + "/debug/node-id") as response:
            assert (await response.json())["node_id"] == node.node_id
        async with session.post(node.url + "/hardware/update") as response:
            update = await response.json()
        assert update["changed"] is False and update["stored_node_id"] == node.node_id
        async with session.post(node.url + "/v1/chat/completions", json={
                "model": "office-helper-v2", "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 3}) as response:
            assert response.status == 200
        async with session.get(node.url + "/status") as response:
            status = await response.json()
        assert status["requests_total"] == 1
        assert status["completion_tokens_total"] >= 3
        assert status["total_tokens"] == status["prompt_tokens_total"] + status[
            "completion_tokens_total"]
        assert status["process_rss_bytes"] > 0 and status["memory_total_bytes"] > 0
