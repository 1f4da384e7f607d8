"""`llamamesh status`, `monitor` and `check`: the swarm as a table, live or once."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from mesh.client.discovery import (
    CatalogDiscovery, DhtDiscovery, NodeDiscovery, NodeInfo, describe_error,
)

DEFAULT_TARGET = "http://127.0.0.1:8000"
_CLEAR = "\x1b[H\x1b[2J"


class StatusError(Exception):
    """The target cannot be read; the message is one line."""


def discovery_for(target: str, session: aiohttp.ClientSession) -> NodeDiscovery:
    """A URL asks that node; a bare host:port joins the DHT through it."""
    if target.startswith(("http://", "https://")):
        return CatalogDiscovery(session, target, timeout_s=3.0)
    try:
        return DhtDiscovery(session, target, timeout_s=2.0)
    except ValueError as exc:
        raise StatusError(f"{target!r} is neither a node URL nor a DHT host:port ({exc})") from None


async def read_nodes(target: str) -> list[NodeInfo]:
    async with aiohttp.ClientSession() as session:
        discovery = discovery_for(target, session)
        try:
            return await discovery.get_nodes()
        except ConnectionError as exc:
            raise StatusError(str(exc)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise StatusError(f"cannot reach the mesh at {target} ({describe_error(exc)})"
                              ) from None
        finally:
            await discovery.close()


def render(target: str, nodes: list[NodeInfo]) -> str:
    healthy = sum(n.healthy for n in nodes)
    models = sorted({m for n in nodes for m in n.models})
    header = ("NODE", "URL", "MODELS", "QUEUE", "ACTIVE", "TOK/S", "HEALTH", "SEEN", "UPTIME")
    rows = [header] + [(
        n.node_id[:12], n.url, ",".join(n.models), str(n.queue_depth), str(n.active_requests),
        f"{n.tokens_per_second:.1f}", "ok" if n.healthy else "DOWN", f"{n.last_seen_s:.0f}s",
        _duration(n.uptime_s)) for n in nodes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"mesh via {target}: {len(nodes)} nodes ({healthy} healthy), "
             f"{len(models)} models: {', '.join(models) or 'none'}", ""]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
              for row in rows]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


async def status(target: str) -> int:
    print(render(target, await read_nodes(target)))
    return 0


async def monitor(target: str, *, interval_s: float, count: int | None) -> int:
    shown = 0
    while count is None or shown < count:
        try:
            text = render(target, await read_nodes(target))
        except StatusError as exc:
            text = f"mesh via {target}: {exc}"
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{_CLEAR}{text}\n\nupdated {stamp}, every {interval_s:g}s; "
                         "Ctrl-C to quit\n")
        sys.stdout.flush()
        shown += 1
        if count is None or shown < count:
            await asyncio.sleep(interval_s)
    return 0


async def check(url: str, *, min_healthy_peers: int) -> tuple[int, str]:
    """(exit code, one line) for scripts and container health checks."""
    url = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=3.0)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url + "/health") as response:
                if response.status != 200:
                    return 1, f"unhealthy: {url}/health answered HTTP {response.status}"
                health = await response.json()
            async with session.get(url + "/v1/models/network") as response:
                catalog = await response.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        return 1, f"unreachable: {url} ({describe_error(exc)})"
    peers = catalog.get("nodes", 1) - 1
    healthy_peers = catalog.get("healthy_nodes", 1) - 1
    line = (f"node {health['node_id'][:12]} {health['status']}, serving "
            f"{', '.join(health['models'])}; {healthy_peers}/{peers} peers healthy; "
            f"queue {health['queue_depth']}")
    if healthy_peers < min_healthy_peers:
        return 1, f"degraded: {line} (wanted at least {min_healthy_peers} healthy peers)"
    return 0, f"ok: {line}"
