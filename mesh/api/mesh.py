"""The mesh as this node sees it: the swarm catalog and the DHT's state."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from mesh.api.context import NODE, NodeContext

routes = web.RouteTableDef()


class Provider(BaseModel, frozen=True):
    node_id: str
    url: str
    local: bool
    healthy: bool
    queue_depth: int
    active_requests: int
    outstanding: int
    capacity: int
    tokens_per_second: float
    latency_ms: float | None
    last_seen_s: float
    uptime_s: float
    version: str


class NetworkModel(BaseModel, frozen=True):
    id: str
    object: str = "model"
    owned_by: str = "llamamesh"
    n_ctx: int | None
    quantization: str | None
    architecture: str | None
    providers: list[Provider]
    healthy_providers: int


class NetworkCatalog(BaseModel, frozen=True):
    object: str = "list"
    node_id: str
    nodes: int
    healthy_nodes: int
    data: list[NetworkModel]


def catalog(ctx: NodeContext) -> NetworkCatalog:
    model = ctx.engine.model
    stats = ctx.engine.stats()
    providers: dict[str, list[Provider]] = {model.id: [Provider(
        node_id=ctx.node_id, url=ctx.advertised_url, local=True, healthy=True,
        queue_depth=stats.queue_depth, active_requests=stats.active_requests,
        outstanding=stats.queue_depth + stats.active_requests, capacity=stats.capacity,
        tokens_per_second=round(stats.tokens_per_second, 2), latency_ms=0.0,
        last_seen_s=0.0, uptime_s=round(ctx.uptime_s, 1), version=ctx.version)]}
    details = {model.id: (model.n_ctx, model.quantization, model.architecture)}
    views = ctx.router.table.views()
    for view in views:
        record = view.record
        for info in record.models:
            details.setdefault(info.id, (info.n_ctx, info.quantization, info.architecture))
            providers.setdefault(info.id, []).append(Provider(
                node_id=record.node_id, url=record.url, local=False, healthy=view.healthy,
                queue_depth=record.load.queue_depth, active_requests=record.load.active_requests,
                outstanding=view.outstanding, capacity=record.load.capacity,
                tokens_per_second=round(view.tokens_per_second, 2),
                latency_ms=round(view.latency_s * 1000, 2) if view.latency_s is not None
                else None,
                last_seen_s=round(view.last_seen_age_s, 1), uptime_s=record.uptime_s,
                version=record.version))
    data = [
        NetworkModel(id=model_id, n_ctx=details[model_id][0],
                     quantization=details[model_id][1], architecture=details[model_id][2],
                     providers=group, healthy_providers=sum(p.healthy for p in group))
        for model_id, group in sorted(providers.items())
    ]
    return NetworkCatalog(node_id=ctx.node_id, nodes=1 + len(views),
                          healthy_nodes=1 + sum(v.healthy for v in views), data=data)


@routes.get("/v1/models/network")
async def models_network(request: web.Request) -> web.Response:
    return web.Response(text=catalog(request.app[NODE]).model_dump_json(),
                        content_type="application/json")


@routes.get("/dht/status")
async def dht_status(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    return web.Response(text=ctx.discovery.status().model_dump_json(),
                        content_type="application/json")
