"""`GET /metrics`, and the hooks that time every completion request."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from mesh.api.context import NODE
from mesh.errors import MeshError

routes = web.RouteTableDef()


@dataclass(slots=True)
class RequestTrace:
    """Filled in by the handler as it decides; read by the hooks below."""

    started: float
    model: str = ""
    strategy: str = ""
    route: str = "none"
    first_byte_at: float | None = None


TRACE = web.RequestKey("mesh_trace", RequestTrace)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[NODE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@web.middleware
async def time_completions(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if request.method != "POST" or not request.path.startswith("/v1/"):
        return await handler(request)
    trace = RequestTrace(started=time.perf_counter())
    request[TRACE] = trace
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except MeshError as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[NODE].metrics
        if trace.model:
            metrics.requests.labels(trace.route, trace.strategy, trace.model, str(status)).inc()
        if status < 400 and trace.model:
            metrics.duration.labels(trace.route, trace.model).observe(
                time.perf_counter() - trace.started)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers go out only with the first token, so this is time to first token."""
    trace = request.get(TRACE)
    if trace is not None and trace.first_byte_at is None and response.status < 400 and trace.model:
        trace.first_byte_at = time.perf_counter()
        request.app[NODE].metrics.first_byte.labels(trace.route, trace.model).observe(
            trace.first_byte_at - trace.started)
