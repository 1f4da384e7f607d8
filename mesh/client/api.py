"""`Client`: generate, chat and stream against a swarm, failing over between nodes.

Any node is a gateway, so the client only has to reach one that is alive:
it tries the providers of the model first (least loaded first, saving the
hop), then any other node, moving on when a node cannot be reached or
fails before answering. An answer that breaks mid-stream is raised, never
passed off as complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from mesh.client.discovery import CatalogDiscovery, DhtDiscovery, NodeDiscovery, NodeInfo

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class ClientError(Exception):
    """The mesh refused the request (a 4xx, or no node could serve it)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class MeshStreamError(ClientError):
    """The node serving a stream failed mid-answer; the text so far is incomplete."""


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    node_id: str
    route: str
    model: str
    tokens_generated: int
    prompt_tokens: int
    finish_reason: str | None


class Client:
    def __init__(self, *, base_url: str | None = None, bootstrap_nodes: str | None = None,
                 model: str | None = None, strategy: str | None = None,
                 connect_timeout_s: float = 3.0, read_timeout_s: float = 300.0,
                 dht_port: int = 0) -> None:
        if (base_url is None) == (bootstrap_nodes is None):
            raise ValueError("give exactly one of base_url or bootstrap_nodes")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s))
        self.dht_discovery: NodeDiscovery = (
            CatalogDiscovery(self._session, base_url) if base_url is not None
            else DhtDiscovery(self._session, bootstrap_nodes or "", dht_port=dht_port))
        self._base_url = base_url.rstrip("/") if base_url else None
        self.model = model
        self.strategy = strategy

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.dht_discovery.close()
        await self._session.close()

    # -- requests --------------------------------------------------------

    async def generate(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.7,
                       model: str | None = None, strategy: str | None = None,
                       stop: Sequence[str] | None = None) -> GenerationResult:
        body = self._body(model, strategy, max_tokens, temperature, stop, prompt=prompt)
        return await self._complete("/v1/completions", body)

    async def chat(self, messages: Sequence[dict[str, str]], *, max_tokens: int = 256,
                   temperature: float = 0.7, model: str | None = None,
                   strategy: str | None = None,
                   stop: Sequence[str] | None = None) -> GenerationResult:
        body = self._body(model, strategy, max_tokens, temperature, stop,
                          messages=list(messages))
        return await self._complete("/v1/chat/completions", body)

    async def stream(self, prompt: str | None = None, *,
                     messages: Sequence[dict[str, str]] | None = None, max_tokens: int = 256,
                     temperature: float = 0.7, model: str | None = None,
                     strategy: str | None = None) -> AsyncIterator[str]:
        """Yield text as it is generated; raises MeshStreamError if the answer breaks."""
        if (prompt is None) == (messages is None):
            raise ValueError("give exactly one of prompt or messages")
        chat = messages is not None
        body = self._body(model, strategy, max_tokens, temperature, None, stream=True,
                          **({"messages": list(messages or ())} if chat else {"prompt": prompt}))
        path = "/v1/chat/completions" if chat else "/v1/completions"
        response = await self._post(path, body)
        try:
            finished = False
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    finished = True
                    break
                event = json.loads(data)
                if "error" in event:
                    raise MeshStreamError(event["error"].get("message", "stream failed"),
                                          code=event["error"].get("code"))
                for choice in event.get("choices", []):
                    text = choice["delta"].get("content") if chat else choice.get("text")
                    if text:
                        yield text
            if not finished:
                raise MeshStreamError("the stream ended without [DONE]; the answer is incomplete")
        except aiohttp.ClientPayloadError as exc:
            raise MeshStreamError(f"the connection broke mid-answer: {exc}") from exc
        finally:
            response.release()

    # -- plumbing --------------------------------------------------------

    def _body(self, model: str | None, strategy: str | None, max_tokens: int,
              temperature: float, stop: Sequence[str] | None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model or self.model, "max_tokens": max_tokens,
                                "temperature": temperature, **fields}
        if strategy or self.strategy:
            body["strategy"] = strategy or self.strategy
        if stop:
            body["stop"] = list(stop)
        return body

    async def _complete(self, path: str, body: dict[str, Any]) -> GenerationResult:
        response = await self._post(path, body)
        try:
            answer = await response.json()
        finally:
            response.release()
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        return GenerationResult(
            text=choice["message"]["content"] if "message" in choice else choice["text"],
            node_id=response.headers.get("X-Mesh-Node", ""),
            route=response.headers.get("X-Mesh-Route", ""), model=answer["model"],
            tokens_generated=usage.get("completion_tokens", 0),
            prompt_tokens=usage.get("prompt_tokens", 0),
            finish_reason=choice.get("finish_reason"))

    async def _post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST to the first node that answers; the caller releases the response."""
        if body["model"] is None:
            body["model"] = await self._any_model()
        failures: list[str] = []
        for url in await self._gateways(body["model"]):
            try:
                response = await self._session.post(url + path, json=body)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                failures.append(f"{url}: {type(exc).__name__}")
                continue
            if response.status in _RETRYABLE:
                failures.append(f"{url}: HTTP {response.status}")
                response.release()
                continue
            if response.status >= 400:
                error = await _error_of(response)
                raise ClientError(error.get("message", f"HTTP {response.status}"),
                                  status=response.status, code=error.get("code"))
            return response
        raise ClientError("no node could serve the request: " + "; ".join(failures or ["none"]))

    async def _gateways(self, model: str) -> list[str]:
        """Providers of `model` (least loaded first), then every other live node."""
        try:
            nodes = await self.dht_discovery.get_nodes()
        except ConnectionError:
            nodes = []
        live = [n for n in nodes if n.healthy]
        providers = sorted((n for n in live if model in n.models), key=lambda n: n.load)
        others = [n for n in live if model not in n.models]
        urls = [n.url for n in (*providers, *others)]
        if self._base_url is not None and self._base_url not in urls:
            urls.append(self._base_url)
        return urls

    async def _any_model(self) -> str:
        nodes: list[NodeInfo] = await self.dht_discovery.get_nodes()
        for node in nodes:
            if node.healthy and node.models:
                return node.models[0]
        raise ClientError("no model is available in the mesh")


async def _error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
        return body.get("error", {}) if isinstance(body, dict) else {}
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    finally:
        response.release()
