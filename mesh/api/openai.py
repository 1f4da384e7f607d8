"""Thin `/v1/*` handlers: validate the body, then serve it where it should run."""

from __future__ import annotations

from aiohttp import web

from mesh.api.context import NODE, NodeContext
from mesh.api.errors import parse_body
from mesh.api.local import OpenAIRequest, respond_local
from mesh.errors import ModelNotFound
from mesh.wire import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList

routes = web.RouteTableDef()

NODE_HEADER = "X-Mesh-Node"
ROUTE_HEADER = "X-Mesh-Route"


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = parse_body(ChatCompletionRequest, await request.read())
    return await _serve(request, body)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = parse_body(CompletionRequest, await request.read())
    return await _serve(request, body)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    cards = [ModelCard(id=model_id, created=int(ctx.started_wall)) for model_id in _model_ids(ctx)]
    return _json(ModelList(data=cards).model_dump_json())


@routes.get("/v1/models/{model_id}")
async def get_model(request: web.Request) -> web.Response:
    ctx = request.app[NODE]
    model_id = request.match_info["model_id"]
    if model_id not in _model_ids(ctx):
        raise ModelNotFound(f"the model {model_id!r} does not exist", param="model")
    return _json(ModelCard(id=model_id, created=int(ctx.started_wall)).model_dump_json())


async def _serve(request: web.Request, body: OpenAIRequest) -> web.StreamResponse:
    ctx = request.app[NODE]
    if body.model != ctx.engine.model.id:
        raise ModelNotFound(
            f"the model {body.model!r} does not exist on this node; "
            f"available: {', '.join(_model_ids(ctx))}",
            param="model",
        )
    headers = {NODE_HEADER: ctx.node_id, ROUTE_HEADER: "local"}
    return await respond_local(request, ctx.engine, body, headers=headers)


def _model_ids(ctx: NodeContext) -> list[str]:
    return [ctx.engine.model.id]


def _json(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")
