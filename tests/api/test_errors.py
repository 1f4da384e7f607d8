"""Every bad request gets OpenAI's error shape and the right status, never a traceback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.conftest import GEMMA_ID
from tests.support.nodes import NodeProcess

CHAT = "/v1/chat/completions"
GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


async def _post(url: str, data: bytes | str, **kwargs: object) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers={"Content-Type": "application/json"}, **kwargs) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


def _assert_openai_error(body: dict, *, code: str | None = None, param: str | None = None) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and isinstance(error["message"], str)
    assert "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


BAD_BODIES = [
    pytest.param(b"{not json", None, id="invalid-json"),
    pytest.param(b"[1, 2]", None, id="not-an-object"),
    pytest.param(json.dumps({"model": GEMMA_ID}), "messages", id="missing-messages"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": []}), "messages", id="no-messages"),
    pytest.param(json.dumps({"messages": GOOD_MESSAGES}), "model", id="missing-model"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": GOOD_MESSAGES, "temperature": 9}),
                 "temperature", id="temperature-out-of-range"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": GOOD_MESSAGES, "max_tokens": -1}),
                 "max_tokens", id="negative-max-tokens"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": GOOD_MESSAGES, "n": 3}),
                 "n", id="n-other-than-1"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": GOOD_MESSAGES,
                             "strategy": "cheapest"}), "strategy", id="unknown-strategy"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": [{"role": "wizard", "content": "x"}]}),
                 None, id="unknown-role"),
    pytest.param(json.dumps({"model": GEMMA_ID, "messages": GOOD_MESSAGES,
                             "response_format": {"type": "xml"}}), None, id="bad-response-format"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_chat_bodies_are_400(gemma_node: NodeProcess, body: bytes, param: str | None
                                       ) -> None:
    status, _, answer = await _post(gemma_node.url + CHAT, body)
    assert status == 400, answer
    _assert_openai_error(answer, param=param)
    assert answer["error"]["type"] == "invalid_request_error"


async def test_unknown_strategy_lists_the_valid_ones(gemma_node: NodeProcess) -> None:
    body = {"model": GEMMA_ID, "messages": GOOD_MESSAGES, "strategy": "cheapest"}
    _, _, answer = await _post(gemma_node.url + CHAT, json.dumps(body))
    for valid in ("load_balanced", "local", "fastest"):
        assert valid in answer["error"]["message"]


async def test_unknown_path_and_method(gemma_node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gemma_node.url + "/v1/nothing-here") as response:
            assert response.status == 404
            _assert_openai_error(await response.json())
        async with session.get(gemma_node.url + CHAT) as response:
            assert response.status == 405
            _assert_openai_error(await response.json())


async def test_body_too_large_is_413(gemma_node: NodeProcess) -> None:
    huge = json.dumps({"model": GEMMA_ID, "messages": [
        {"role": "user", "content": "x" * (5 * 1024 * 1024)}]})
    status, _, answer = await _post(gemma_node.url + CHAT, huge)
    assert status == 413
    _assert_openai_error(answer, code="request_too_large")


async def test_prompt_longer_than_context_is_400(gemma_node: NodeProcess) -> None:
    words = " ".join(["word"] * 5000)  # far past the node's 2048-token context
    body = {"model": GEMMA_ID, "messages": [{"role": "user", "content": words}], "max_tokens": 2}
    status, _, answer = await _post(gemma_node.url + CHAT, json.dumps(body))
    assert status == 400
    _assert_openai_error(answer, code="context_length_exceeded")


async def test_queue_full_is_503_with_retry_after(gemma_node: NodeProcess) -> None:
    """The shared node runs with --max-queue 1: one generating, one waiting, the third is refused."""
    slow = json.dumps({"model": GEMMA_ID, "prompt": "Tell a long story:", "max_tokens": 120,
                       "temperature": 0})
    quick = json.dumps({"model": GEMMA_ID, "prompt": "Hi", "max_tokens": 1})

    async def busy_status() -> dict:
        async with aiohttp.ClientSession() as session, \
                session.get(gemma_node.url + "/health") as response:
            return await response.json()

    first = asyncio.create_task(_post(gemma_node.url + "/v1/completions", slow))
    for _ in range(200):
        if (await busy_status())["active_requests"] == 1:
            break
        await asyncio.sleep(0.02)
    second = asyncio.create_task(_post(gemma_node.url + "/v1/completions", slow))
    for _ in range(200):
        if (await busy_status())["queue_depth"] == 1:
            break
        await asyncio.sleep(0.02)
    status, headers, answer = await _post(gemma_node.url + "/v1/completions", quick)
    assert status == 503, answer
    assert headers["Retry-After"].isdigit()
    _assert_openai_error(answer, code="queue_full")
    # The queued requests still complete: overload refuses, it does not break.
    assert (await first)[0] == 200
    assert (await second)[0] == 200
