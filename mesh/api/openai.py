"""Thin `/v1/*` handlers: validate the body, then serve it where it should run.

One request, top to bottom: parse and validate → a proxied request (hop
header) is served here or fails, never forwarded again → the router plans
the candidates → this node's engine, or the proxy streams a peer's bytes
back unchanged → headers say who served it and how.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mesh.api.context import NODE, NodeContext
from mesh.api.errors import parse_body
from mesh.api.local import OpenAIRequest, respond_local
from mesh.api.metrics import TRACE
from mesh.api.relay import relay
from mesh.errors import BadRequest, ModelNotFound, Overloaded
from mesh.router.proxy import NODE_HEADER, VIA_HEADER
from mesh.router.select import DEFAULT_STRATEGY
from mesh.wire import STRATEGIES, ChatCompletionRequest, CompletionRequest, ModelCard, ModelList

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

ROUTE_HEADER = "X-Mesh-Route"
STRATEGY_HEADER = "X-Mesh-Strategy"


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    return await _serve(request, parse_body(ChatCompletionRequest, raw), raw)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    return await _serve(request, parse_body(CompletionRequest, raw), raw)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    cards = [ModelCard(id=model_id, created=int(ctx.started_wall))
             for model_id in ctx.router.model_ids()]
    return _json(ModelList(data=cards).model_dump_json())


@routes.get("/v1/models/{model_id}")
async def get_model(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    model_id = request.match_info["model_id"]
    if model_id not in ctx.router.model_ids():
        raise ModelNotFound(f"the model {model_id!r} does not exist in the mesh", param="model")
    return _json(ModelCard(id=model_id, created=int(ctx.started_wall)).model_dump_json())


async def _serve(request: web.Request, body: OpenAIRequest, raw: bytes) -> web.StreamResponse:
    ctx = request.app[NODE]
    trace = request[TRACE]
    trace.model = body.model
    if VIA_HEADER in request.headers:
        trace.strategy, trace.route = "forwarded", "local"
        return await _serve_forwarded(request, ctx, body)
    strategy = body.strategy or _header_strategy(request) or DEFAULT_STRATEGY
    trace.strategy = strategy
    route = await ctx.router.plan(body.model, strategy)
    trace.route = "local" if route[0].is_local else "peer"
    if route[0].is_local:
        try:
            return await respond_local(request, ctx.engine, body, headers=_local_headers(ctx))
        except Overloaded:
            if len(route) == 1:
                raise
            log.info("local queue full; sending %s to a peer", body.model)
        route = route[1:]
        trace.route = "peer"
    upstream = await ctx.router.proxy.open_stream(route, request.path, raw)
    if upstream.attempts > 1:
        ctx.metrics.retries.inc(upstream.attempts - 1)
        ctx.metrics.failovers.inc()
    headers = {NODE_HEADER: upstream.peer.node_id} | upstream.headers() | {
        ROUTE_HEADER: f"peer; attempts={upstream.attempts}; via={ctx.node_id}"}
    return await relay(request, upstream, headers=headers)


async def _serve_forwarded(request: web.Request, ctx: NodeContext,
                           body: OpenAIRequest) -> web.StreamResponse:
    """A peer sent this here: serve it or fail; forwarding again could loop."""
    if body.model != ctx.engine.model.id:
        raise ModelNotFound(f"this node does not serve {body.model!r}", param="model")
    return await respond_local(request, ctx.engine, body, headers=_local_headers(ctx))


def _header_strategy(request: web.Request) -> str | None:
    value = request.headers.get(STRATEGY_HEADER)
    if value is not None and value not in STRATEGIES:
        raise BadRequest(f"unknown {STRATEGY_HEADER} {value!r}; valid: {', '.join(STRATEGIES)}",
                         param="strategy")
    return value


def _local_headers(ctx: NodeContext) -> dict[str, str]:
    return {NODE_HEADER: ctx.node_id, ROUTE_HEADER: "local"}


def _json(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")
