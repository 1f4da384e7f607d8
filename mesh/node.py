"""Start and stop one node: sockets, engine, HTTP app, in that order.

Sockets are bound first so a busy port fails in milliseconds (before a
model load) and a node on port 0 knows the URL it advertises.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import signal
import socket
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from mesh.api import admin, openai, ui
from mesh.api import mesh as mesh_routes
from mesh.api import metrics as metrics_routes
from mesh.api.metrics import on_prepare, time_completions
from mesh.api.context import NODE, NodeContext
from mesh.api.errors import openai_errors
from mesh.dht.address import BootstrapResolveError, advertise_host, http_url, resolve_bootstrap
from mesh.dht.beacon import LanBeacon
from mesh.dht.discovery import Discovery
from mesh.dht.records import ModelInfo, NodeLoad, NodeRecord
from mesh.errors import StartupError
from mesh.identity import resolve_identity
from mesh.local.catalog import default_model_path
from mesh.local.engine import Engine
from mesh.metrics import Metrics, Snapshot
from mesh.router.peers import PeerTable
from mesh.router.proxy import Proxy
from mesh.router.router import Router, RouterTiming
from mesh.settings import Settings

log = logging.getLogger(__name__)

# A peer the DHT has not listed for this long (three full refreshes) leaves the
# table and its probes stop; liveness itself comes from probes and DHT expiry.
PEER_STALE_AFTER_S = 3 * RouterTiming().refresh_interval_s + 1.0


def build_app(ctx: NodeContext) -> web.Application:
    app = web.Application(client_max_size=ctx.settings.max_body_bytes,
                          middlewares=[time_completions, openai_errors])
    app[NODE] = ctx
    app.on_response_prepare.append(on_prepare)
    app.add_routes(metrics_routes.routes)
    app.add_routes(mesh_routes.routes)  # before /v1/models/{id}, which would match "network"
    app.add_routes(openai.routes)
    app.add_routes(admin.routes)
    ui.setup(app)
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
    from mesh.local.llama_engine import LlamaEngine, gpu_offload_supported

    n_gpu_layers = gpu_layers(settings, gpu_offload_supported())
    path = settings.model_path
    if path is None:
        path = await asyncio.to_thread(default_model_path, settings.state_dir)
    return await LlamaEngine.load(
        path, model_name=settings.model_name, chat_format=settings.chat_format,
        n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_threads=settings.n_threads,
        n_gpu_layers=n_gpu_layers, max_queue=settings.max_queue,
    )


def gpu_layers(settings: Settings, gpu_available: bool) -> int:
    """HARDWARE_MODE and N_GPU_LAYERS, as LlamaNet's images read them."""
    if settings.hardware_mode == "cpu":
        return 0
    if settings.hardware_mode == "gpu" and not gpu_available:
        raise StartupError("HARDWARE_MODE=gpu, but llama-cpp-python was built without GPU "
                           "offload; reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\"")
    if not gpu_available:
        if settings.n_gpu_layers:
            log.warning("N_GPU_LAYERS=%d ignored: llama.cpp has no GPU offload in this build",
                        settings.n_gpu_layers)
        return 0
    layers = -1 if settings.n_gpu_layers is None else settings.n_gpu_layers
    log.info("GPU offload: %s layers", "all" if layers == -1 else layers)
    return layers


async def serve(settings: Settings) -> None:
    """Run a node until SIGINT/SIGTERM; raise StartupError for bad configuration."""
    http_sock = bind_http(settings.host, settings.port)
    check_udp_port(settings.host, settings.dht_port)
    http_port = http_sock.getsockname()[1]
    try:
        bootstrap = await resolve_bootstrap(settings.bootstrap_nodes)
    except BootstrapResolveError as exc:
        raise StartupError(str(exc)) from None
    advertise = await _advertised_ip(settings, bootstrap)
    identity = resolve_identity(state_dir=settings.state_dir, port=http_port,
                                override=settings.node_id)
    engine = await load_engine(settings)
    discovery = Discovery(
        node_id=identity.node_id, listen_host=settings.host, port=settings.dht_port,
        bootstrap=bootstrap, heartbeat_interval=settings.heartbeat_interval)
    ctx = NodeContext(settings=settings, identity=identity, engine=engine,
                      advertised_url=http_url(advertise, http_port), http_port=http_port,
                      discovery=discovery)
    try:
        await discovery.start(lambda: own_record(ctx, advertise))
    except OSError as exc:
        await engine.close()
        raise StartupError(f"cannot bind the DHT to UDP port {settings.dht_port}: "
                           f"{exc.strerror or exc}") from None
    beacon = lan_beacon(settings, discovery, identity.node_id)
    if beacon is not None:
        await beacon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    async with peer_session() as session:
        table = PeerTable(own_node_id=identity.node_id, stale_after_s=PEER_STALE_AFTER_S)
        ctx.router = Router(
            node_id=identity.node_id, own_url=ctx.advertised_url, engine=engine, records=discovery, table=table,
            proxy=Proxy(session, table, node_id=identity.node_id), timing=RouterTiming())
        ctx.metrics = node_metrics(ctx)
        try:
            await ctx.router.start()
            runner = web.AppRunner(build_app(ctx), handler_cancellation=True, access_log=None,
                                   shutdown_timeout=5.0)
            await runner.setup()
            await web.SockSite(runner, http_sock).start()
            log.info("node %s serving %r on %s (HTTP %s:%d, DHT UDP %d)", identity.node_id,
                     engine.model.id, ctx.advertised_url, settings.host, http_port,
                     discovery.port)
            _write_ready_file(settings.ready_file, ctx)
            await stop.wait()
            log.info("shutting down: withdrawing from the mesh")
        finally:
            # Leave the DHT first so peers stop routing here while requests drain.
            if beacon is not None:
                await beacon.stop()
            await discovery.stop()
            await ctx.router.stop()
            if runner is not None:
                await runner.cleanup()
            await engine.close()


def own_record(ctx: NodeContext, advertise: str) -> NodeRecord:
    """This node as the DHT should see it now; called at every heartbeat."""
    model = ctx.engine.model
    stats = ctx.engine.stats()
    return NodeRecord(
        node_id=ctx.node_id, url=ctx.advertised_url, dht_host=advertise,
        dht_port=ctx.discovery.port,
        models=(ModelInfo(id=model.id, n_ctx=model.n_ctx, quantization=model.quantization,
                          architecture=model.architecture),),
        load=NodeLoad(queue_depth=stats.queue_depth, active_requests=stats.active_requests,
                      capacity=stats.capacity, tokens_per_second=stats.tokens_per_second,
                      prompt_tokens_per_second=stats.prompt_tokens_per_second),
        uptime_s=ctx.uptime_s, version=ctx.version,
        expires_at=time.time() + 3 * ctx.settings.heartbeat_interval + 1,
    )


def lan_beacon(settings: Settings, discovery: Discovery, node_id: str) -> LanBeacon | None:
    """The LAN beacon, unless switched off or pointless (a node bound to loopback)."""
    if not settings.lan_discovery or settings.host.startswith("127.") or settings.host == "::1":
        return None
    return LanBeacon(node_id=node_id, dht_port=discovery.port,
                     on_peer=lambda host, port: discovery.add_peers([(host, port)]),
                     interfaces=settings.lan_interfaces, port=settings.lan_discovery_port)


def node_metrics(ctx: NodeContext) -> Metrics:
    def peers() -> tuple[int, int]:
        views = ctx.router.table.views()
        return len(views), sum(v.healthy for v in views)

    def dht() -> tuple[int, int, int, int]:
        status = ctx.discovery.status()
        return (status.publishes, status.publish_errors, status.lookups, status.lookup_errors)

    return Metrics(Snapshot(model_id=lambda: ctx.engine.model.id, engine=ctx.engine.stats,
                            peers=peers, dht=dht))


def peer_session() -> aiohttp.ClientSession:
    """The one client session for every peer request: pooled keep-alive
    connections, no automatic decompression (bytes pass through as sent)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30),
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))


def check_udp_port(host: str, port: int) -> None:
    """Fail before the model load if the DHT port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"DHT UDP port {port} on {host} is already in use") from None
            raise StartupError(f"cannot bind the DHT to {host}:{port}: {exc.strerror}") from None


async def _advertised_ip(settings: Settings, bootstrap: list[tuple[str, int]]) -> str:
    explicit = settings.advertise_host
    if explicit is not None:
        try:
            ipaddress.ip_address(explicit)
        except ValueError:
            try:
                explicit = (await resolve_bootstrap([(explicit, 1)]))[0][0]
            except BootstrapResolveError:
                raise StartupError(f"cannot resolve --advertise-host {explicit!r}") from None
        return advertise_host(explicit, bootstrap)
    if settings.host not in ("0.0.0.0", "::", ""):
        return settings.host  # bound to one address: that is the only one that works
    chosen = advertise_host(None, bootstrap)
    if ipaddress.ip_address(chosen).is_loopback:
        # Joined through a peer on this machine, but listening on every interface:
        # advertise the LAN address like that peer (a seed with no bootstrap list)
        # does, so machines beyond this one can reach us too. 127.0.0.1 remains
        # only for a machine with no network at all.
        chosen = advertise_host(None, [])
    return chosen


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_ready_file(path: Path | None, ctx: NodeContext) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "node_id": ctx.node_id, "url": ctx.advertised_url, "http_port": ctx.http_port,
        "dht_port": ctx.discovery.port,
        "model": ctx.engine.model.id,
    }))
    tmp.replace(path)
