"""The web UI: its static files and the live view of the mesh it draws.

`GET /` is the single page, `GET /static/...` its scripts, styles and
vendored libraries (all shipped as package data of `mesh_ui`, so the UI
works with no network at all), and `GET /mesh/events` a server-sent event
stream of `MeshSnapshot`s: one when a browser connects, then one whenever
the mesh changes (checked every `CHECK_INTERVAL_S`) and at least every
`HEARTBEAT_S`, so ages and uptimes keep moving. Every figure comes from
memory this node already keeps (engine stats, the peer table, the DHT's
counters): a watching browser costs no request to any peer.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import re
import time
from importlib.resources.abc import Traversable
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import BaseModel

from mesh.api.context import NODE, NodeContext

CHECK_INTERVAL_S = 0.5
HEARTBEAT_S = 2.0
RETRY_MS = 2000  # how soon a browser reconnects after the stream drops

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# What the UI is made of; anything else in the package (Python, bytecode) is not served.
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
          ".html": "text/html", ".png": "image/png", ".ico": "image/x-icon",
          ".txt": "text/plain", ".md": "text/markdown"}

# The page runs only its own scripts: even if model output got past the
# sanitiser, an injected <script> or on* attribute would not run.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

CLOSING = web.AppKey("ui_closing", asyncio.Event)


class MeshNode(BaseModel, frozen=True):
    """One node as the UI shows it; `local` is the node serving the page."""

    node_id: str
    url: str
    local: bool
    models: list[str]
    healthy: bool
    queue_depth: int
    active_requests: int
    outstanding: int
    capacity: int
    tokens_per_second: float
    uptime_s: float
    last_seen_s: float
    latency_ms: float | None
    version: str


class DhtView(BaseModel, frozen=True):
    dht_port: int
    bootstrapped: bool
    routing_table_size: int
    peers: list[str]
    bootstrap_nodes: list[str]
    keys_published: int
    publishes: int
    publish_errors: int
    lookups: int
    lookup_errors: int
    last_publish_age_s: float | None


class MeshSnapshot(BaseModel, frozen=True):
    node_id: str
    version: str
    models: list[str]  # what this node can serve now, locally or through a healthy peer
    nodes: list[MeshNode]
    dht: DhtView


# Fields that move on every tick; a change elsewhere is worth an event now.
_VOLATILE: Any = {"nodes": {"__all__": {"uptime_s", "last_seen_s", "latency_ms"}},
                  "dht": {"last_publish_age_s"}}


def snapshot(ctx: NodeContext) -> MeshSnapshot:
    stats = ctx.engine.stats()
    nodes = [MeshNode(
        node_id=ctx.node_id, url=ctx.advertised_url, local=True, models=[ctx.engine.model.id],
        healthy=True, queue_depth=stats.queue_depth, active_requests=stats.active_requests,
        outstanding=stats.queue_depth + stats.active_requests, capacity=stats.capacity,
        tokens_per_second=round(stats.tokens_per_second, 1), uptime_s=round(ctx.uptime_s),
        last_seen_s=0.0, latency_ms=0.0, version=ctx.version)]
    for view in ctx.router.table.views():
        record = view.record
        nodes.append(MeshNode(
            node_id=record.node_id, url=record.url, local=False,
            models=[m.id for m in record.models], healthy=view.healthy,
            queue_depth=record.load.queue_depth, active_requests=record.load.active_requests,
            outstanding=view.outstanding, capacity=record.load.capacity,
            tokens_per_second=round(view.tokens_per_second, 1),
            uptime_s=round(record.uptime_s), last_seen_s=round(view.last_seen_age_s, 1),
            latency_ms=None if view.latency_s is None else round(view.latency_s * 1000, 1),
            version=record.version))
    dht = ctx.discovery.status()
    return MeshSnapshot(
        node_id=ctx.node_id, version=ctx.version, models=ctx.router.model_ids(), nodes=nodes,
        dht=DhtView(
            dht_port=dht.dht_port, bootstrapped=dht.bootstrapped,
            routing_table_size=dht.routing_table_size, peers=list(dht.peers),
            bootstrap_nodes=list(dht.bootstrap_nodes), keys_published=len(dht.keys_published),
            publishes=dht.publishes, publish_errors=dht.publish_errors, lookups=dht.lookups,
            lookup_errors=dht.lookup_errors,
            last_publish_age_s=None if dht.last_publish_at is None
            else round(max(time.time() - dht.last_publish_at, 0.0), 1)))


async def mesh_events(request: web.Request) -> web.StreamResponse:
    """Server-sent `snapshot` events until the browser leaves or the node stops."""
    ctx = request.app[NODE]
    closing = request.app[CLOSING]
    async with sse_response(request, sep="\n", ping_interval=HEARTBEAT_S * 5) as events:
        last_key: dict[str, Any] | None = None
        last_sent = 0.0
        while events.is_connected() and not closing.is_set():
            current = snapshot(ctx)
            key = current.model_dump(exclude=_VOLATILE)
            now = time.monotonic()
            if key != last_key or now - last_sent >= HEARTBEAT_S:
                await events.send(current.model_dump_json(), event="snapshot",
                                  retry=RETRY_MS if last_key is None else None)
                last_key, last_sent = key, now
            try:
                await asyncio.wait_for(closing.wait(), CHECK_INTERVAL_S)
            except TimeoutError:
                pass
    return events


async def mesh_snapshot(request: web.Request) -> web.Response:
    """The same snapshot once, as JSON (for scripts and curl)."""
    return web.Response(text=snapshot(request.app[NODE]).model_dump_json(),
                        content_type="application/json")


async def index(request: web.Request) -> web.Response:
    return _file(_ui_root() / "index.html", "index.html", headers=_PAGE_HEADERS, request=request)


async def static(request: web.Request) -> web.Response:
    parts = request.match_info["path"].split("/")
    if not all(_SEGMENT.match(part) for part in parts):
        raise web.HTTPNotFound()
    resource = _ui_root().joinpath(*parts)
    return _file(resource, parts[-1], headers={"Cache-Control": "no-cache",
                                               "X-Content-Type-Options": "nosniff"},
                 request=request)


def _ui_root() -> Traversable:
    return importlib.resources.files("mesh_ui")


def _file(resource: Traversable, name: str, *, headers: dict[str, str],
          request: web.Request) -> web.Response:
    """A package-data file with an ETag, so a reload revalidates in one round trip."""
    content_type = _TYPES.get(name[name.rfind("."):]) if "." in name else None
    if content_type is None or not resource.is_file():
        raise web.HTTPNotFound()
    body = resource.read_bytes()  # small, and in the page cache after the first read
    etag = hashlib.sha256(body).hexdigest()[:32]
    if request.if_none_match and any(e.value == etag for e in request.if_none_match):
        return web.Response(status=304, headers=headers | {"ETag": f'"{etag}"'})
    response = web.Response(body=body, content_type=content_type, headers=headers)
    if content_type.startswith("text/") or content_type.endswith("+xml"):
        response.charset = "utf-8"
    response.etag = etag
    return response


async def _close_streams(app: web.Application) -> None:
    """Open event streams end at shutdown instead of holding it for its timeout."""
    app[CLOSING].set()


def setup(app: web.Application) -> None:
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
    app.router.add_get("/mesh/events", mesh_events)
    app.router.add_get("/mesh/snapshot", mesh_snapshot)
