"""Start and stop one node: sockets, engine, HTTP app, in that order.

Sockets are bound first so a busy port fails in milliseconds (before a
model load) and a node on port 0 knows the URL it advertises.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import signal
import socket
from pathlib import Path

from aiohttp import web

from mesh.api import admin, openai
from mesh.api.context import NODE, NodeContext
from mesh.api.errors import openai_errors
from mesh.errors import StartupError
from mesh.identity import resolve_identity
from mesh.local.catalog import default_model_path
from mesh.local.engine import Engine
from mesh.settings import Settings

log = logging.getLogger(__name__)


def build_app(ctx: NodeContext) -> web.Application:
    app = web.Application(client_max_size=ctx.settings.max_body_bytes,
                          middlewares=[openai_errors])
    app[NODE] = ctx
    app.add_routes(openai.routes)
    app.add_routes(admin.routes)
    return app


def bind_http(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=1024, reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"HTTP port {port} on {host} is already in use") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"cannot bind HTTP to {host}: no such local address") from None
        raise StartupError(f"cannot bind HTTP to {host}:{port}: {exc.strerror}") from None


async def load_engine(settings: Settings) -> Engine:
    if settings.engine == "scripted":
        from mesh.local.scripted import ScriptedEngine

        return ScriptedEngine(
            model_id=settings.model_name or "scripted", tokens=settings.scripted_tokens,
            token_delay_s=settings.scripted_delay_ms / 1000, max_queue=settings.max_queue,
            n_ctx=settings.n_ctx,
        )
    from mesh.local.llama_engine import LlamaEngine

    path = settings.model_path
    if path is None:
        path = await asyncio.to_thread(default_model_path, settings.state_dir)
    return await LlamaEngine.load(
        path, model_name=settings.model_name, chat_format=settings.chat_format,
        n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_threads=settings.n_threads,
        n_gpu_layers=settings.n_gpu_layers, max_queue=settings.max_queue,
    )


async def serve(settings: Settings) -> None:
    """Run a node until SIGINT/SIGTERM; raise StartupError for bad configuration."""
    http_sock = bind_http(settings.host, settings.port)
    http_port = http_sock.getsockname()[1]
    identity = resolve_identity(state_dir=settings.state_dir, port=http_port,
                                override=settings.node_id)
    engine = await load_engine(settings)
    advertise = settings.advertise_host or _local_advertise_host(settings.host)
    ctx = NodeContext(settings=settings, identity=identity, engine=engine,
                      advertised_url=f"http://{_url_host(advertise)}:{http_port}",
                      http_port=http_port)
    runner = web.AppRunner(build_app(ctx), handler_cancellation=True, access_log=None,
                           shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.SockSite(runner, http_sock).start()
        log.info("node %s serving %r on %s (bound %s:%d)", identity.node_id,
                 engine.model.id, ctx.advertised_url, settings.host, http_port)
        _write_ready_file(settings.ready_file, ctx, http_port)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
        await engine.close()


def _local_advertise_host(bind_host: str) -> str:
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_ready_file(path: Path | None, ctx: NodeContext, http_port: int) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "node_id": ctx.node_id, "url": ctx.advertised_url, "http_port": http_port,
        "model": ctx.engine.model.id,
    }))
    tmp.replace(path)
