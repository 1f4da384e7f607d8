"""How a client finds nodes: by asking one node, or by reading the DHT itself."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from mesh.settings import parse_host_port


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    url: str
    models: tuple[str, ...]
    healthy: bool
    queue_depth: int
    active_requests: int
    tokens_per_second: float
    uptime_s: float
    last_seen_s: float

    @property
    def load(self) -> int:
        return self.queue_depth + self.active_requests


class NodeDiscovery(Protocol):
    async def get_nodes(self) -> list[NodeInfo]: ...

    async def close(self) -> None: ...


class CatalogDiscovery:
    """Nodes as one node's `/v1/models/network` shows them; falls back to any
    node it has seen when that node stops answering."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *,
                 timeout_s: float = 5.0) -> None:
        self._session = session
        self._urls = [base_url.rstrip("/")]
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get_nodes(self) -> list[NodeInfo]:
        last_error: Exception | None = None
        for url in list(self._urls):
            try:
                async with self._session.get(url + "/v1/models/network",
                                             timeout=self._timeout) as response:
                    response.raise_for_status()
                    catalog = await response.json()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last_error = exc
                continue
            nodes = nodes_from_catalog(catalog)
            self._urls = [url] + [n.url for n in nodes if n.url != url]
            return nodes
        raise ConnectionError(f"no node answered at {', '.join(self._urls)} "
                              f"({describe_error(last_error)})")

    async def close(self) -> None:
        return None


def nodes_from_catalog(catalog: dict) -> list[NodeInfo]:
    merged: dict[str, dict] = {}
    for model in catalog.get("data", []):
        for provider in model.get("providers", []):
            entry = merged.setdefault(provider["node_id"], provider | {"models": []})
            entry["models"].append(model["id"])
    return [NodeInfo(node_id=node_id, url=p["url"], models=tuple(p["models"]),
                     healthy=p["healthy"], queue_depth=p["queue_depth"],
                     active_requests=p["active_requests"],
                     tokens_per_second=p["tokens_per_second"], uptime_s=p["uptime_s"],
                     last_seen_s=p["last_seen_s"])
            for node_id, p in sorted(merged.items())]


class DhtDiscovery:
    """Joins the DHT as a silent member (it publishes nothing) and reads every
    node record; health is each node's own `/health`, asked directly."""

    def __init__(self, session: aiohttp.ClientSession, bootstrap_nodes: str, *,
                 dht_port: int = 0, timeout_s: float = 3.0) -> None:
        self._session = session
        self._bootstrap = [parse_host_port(p) for p in bootstrap_nodes.split(",") if p.strip()]
        if not self._bootstrap:
            raise ValueError("bootstrap_nodes needs at least one host:port")
        self._dht_port = dht_port
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._discovery: object | None = None
        self._lock = asyncio.Lock()

    async def _joined(self):  # -> mesh.dht.discovery.Discovery
        from mesh.dht.address import resolve_bootstrap
        from mesh.dht.discovery import Discovery

        async with self._lock:
            if self._discovery is None:
                discovery = Discovery(node_id=f"client-{secrets.token_hex(8)}",
                                      port=self._dht_port,
                                      bootstrap=await resolve_bootstrap(self._bootstrap))
                await discovery.start(None)
                self._discovery = discovery
            return self._discovery

    async def get_nodes(self) -> list[NodeInfo]:
        discovery = await self._joined()
        records = await discovery.all_nodes()
        healths = await asyncio.gather(*(self._health(r.url) for r in records))
        return [NodeInfo(node_id=r.node_id, url=r.url, models=tuple(m.id for m in r.models),
                         healthy=h is not None,
                         queue_depth=(h or {}).get("queue_depth", r.load.queue_depth),
                         active_requests=(h or {}).get("active_requests",
                                                       r.load.active_requests),
                         tokens_per_second=(h or {}).get("tokens_per_second",
                                                         r.load.tokens_per_second),
                         uptime_s=(h or {}).get("uptime_s", r.uptime_s), last_seen_s=0.0)
                for r, h in zip(records, healths)]

    async def _health(self, url: str) -> dict | None:
        try:
            async with self._session.get(url + "/health", timeout=self._timeout) as response:
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def close(self) -> None:
        if self._discovery is not None:
            await self._discovery.stop()  # type: ignore[attr-defined]
            self._discovery = None


def describe_error(exc: BaseException | None) -> str:
    """A short, human reason for a failed HTTP call."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    return f"{type(exc).__name__}: {exc}" if exc else "no answer"
