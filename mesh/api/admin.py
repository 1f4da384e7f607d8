"""Native endpoints: health, live figures, node info, hardware identity."""

from __future__ import annotations

import os
import platform

import psutil
from aiohttp import web
from pydantic import BaseModel

from mesh.api.context import NODE, NodeContext
from mesh.identity import read_fingerprint, resolve_identity, validate
from mesh.router.proxy import VIA_HEADER

routes = web.RouteTableDef()

_PROCESS = psutil.Process()


class Health(BaseModel, frozen=True):
    status: str  # "ok" (idle or generating) or "busy" (requests waiting)
    node_id: str
    models: list[str]
    queue_depth: int
    active_requests: int
    capacity: int
    tokens_per_second: float
    uptime_s: float


class Status(BaseModel, frozen=True):
    node_id: str
    model: str
    queue_depth: int
    active_requests: int
    capacity: int
    tokens_per_second: float
    prompt_tokens_per_second: float
    prompt_tokens_total: int
    completion_tokens_total: int
    total_tokens: int
    requests_total: int
    requests_cancelled: int
    uptime_s: float
    cpu_percent: float
    process_rss_bytes: int
    memory_percent: float
    memory_total_bytes: int
    peers_known: int
    peers_healthy: int
    mesh_models: list[str]


def health_of(ctx: NodeContext) -> Health:
    stats = ctx.engine.stats()
    return Health(
        status="busy" if stats.queue_depth else "ok", node_id=ctx.node_id,
        models=[ctx.engine.model.id], queue_depth=stats.queue_depth,
        active_requests=stats.active_requests, capacity=stats.capacity,
        tokens_per_second=round(stats.tokens_per_second, 2), uptime_s=round(ctx.uptime_s, 1),
    )


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    prober = request.headers.get(VIA_HEADER)
    if prober:
        ctx.router.heard_from(prober)  # a peer probing us may be new: learn it now
    return _json(health_of(ctx))


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    stats = ctx.engine.stats()
    memory = psutil.virtual_memory()
    views = ctx.router.table.views()
    return _json(Status(
        node_id=ctx.node_id, model=ctx.engine.model.id,
        queue_depth=stats.queue_depth, active_requests=stats.active_requests,
        capacity=stats.capacity, tokens_per_second=round(stats.tokens_per_second, 2),
        prompt_tokens_per_second=round(stats.prompt_tokens_per_second, 2),
        prompt_tokens_total=stats.prompt_tokens_total,
        completion_tokens_total=stats.completion_tokens_total,
        total_tokens=stats.prompt_tokens_total + stats.completion_tokens_total,
        requests_total=stats.requests_total, requests_cancelled=stats.requests_cancelled,
        uptime_s=round(ctx.uptime_s, 1),
        cpu_percent=_PROCESS.cpu_percent(interval=None),  # since the previous call: no wait
        process_rss_bytes=_PROCESS.memory_info().rss,
        memory_percent=memory.percent, memory_total_bytes=memory.total,
        peers_known=len(views), peers_healthy=sum(v.healthy for v in views),
        mesh_models=ctx.router.model_ids(),
    ))


@routes.get("/info")
async def info(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    model = ctx.engine.model
    s = ctx.settings
    return web.json_response({
        "node_id": ctx.node_id,
        "version": ctx.version,
        "url": ctx.advertised_url,
        "model": {
            "id": model.id, "path": str(model.path), "architecture": model.architecture,
            "quantization": model.quantization, "n_ctx": model.n_ctx,
            "n_ctx_train": model.n_ctx_train, "chat_format": model.chat_format,
            "size_bytes": model.size_bytes,
        },
        "config": {
            "host": s.host, "port": ctx.http_port, "dht_port": s.dht_port,
            "n_ctx": s.n_ctx, "n_batch": s.n_batch, "n_threads": s.n_threads,
            "n_gpu_layers": s.n_gpu_layers, "hardware_mode": s.hardware_mode, "max_queue": s.max_queue,
            "heartbeat_interval": s.heartbeat_interval,
            "bootstrap_nodes": [f"{h}:{p}" for h, p in s.bootstrap_nodes],
        },
        "uptime_s": round(ctx.uptime_s, 1),
        "mesh": {
            "dht": ctx.discovery.status().model_dump(),
            "peers": [{"node_id": v.record.node_id, "url": v.record.url, "healthy": v.healthy,
                       "models": [m.id for m in v.record.models]}
                      for v in ctx.router.table.views()],
            "models": ctx.router.model_ids(),
        },
    })


@routes.get("/hardware")
async def hardware(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    try:
        summary = read_fingerprint().summary() | {"is_fallback": False}
    except (OSError, ValueError) as exc:
        summary = {"is_fallback": True, "error": str(exc)}
    return web.json_response(summary | {
        "node_id": ctx.node_id, "id_source": ctx.identity.source,
        "cpu_logical": os.cpu_count(), "python": platform.python_version(),
    })


@routes.get("/hardware/validate")
async def hardware_validate(request: web.Request) -> web.Response:
    return web.json_response(validate(request.app[NODE].identity))


@routes.post("/hardware/update")
async def hardware_update(request: web.Request) -> web.Response:
    """Re-read the fingerprint and store the id it gives; the running node keeps
    its id until restart so peers never see it change mid-session."""
    ctx = request.app[NODE]
    fresh = resolve_identity(state_dir=ctx.settings.state_dir, port=ctx.http_port,
                             override=ctx.settings.node_id)
    return web.json_response({
        "node_id": ctx.node_id, "stored_node_id": fresh.node_id, "source": fresh.source,
        "changed": fresh.node_id != ctx.node_id,
        "note": "a changed id takes effect when the node restarts",
    })


@routes.get("/debug/node-id")
async def debug_node_id(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    identity = ctx.identity
    return web.json_response({
        "node_id": identity.node_id, "source": identity.source,
        "stored_at": str(identity.stored_at) if identity.stored_at else None,
        "fingerprint_digest": identity.fingerprint_digest,
        "validation": validate(identity),
    })


def _json(model: BaseModel) -> web.Response:
    return web.Response(text=model.model_dump_json(), content_type="application/json")
