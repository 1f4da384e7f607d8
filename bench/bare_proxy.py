"""The "bare aiohttp pass-through" reference: the least a Python proxy can do.

One aiohttp server per `--route LISTEN_PORT=UPSTREAM_URL`, one shared
ClientSession (pooled keep-alive), the request body forwarded as is and the
answer's bytes relayed as they come (`iter_any`), no routing, no retries, no
parsing. What node A does on top of this (validation, a route decision,
failover, accounting) is the mesh's own cost.

    python -m bench.bare_proxy --route 9001=http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

_PASSED = ("Content-Type", "Cache-Control")
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session")
UPSTREAM: web.AppKey[str] = web.AppKey("upstream")


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    async with session.post(request.app[UPSTREAM] + request.path, data=body,
                            headers={"Content-Type": "application/json"}) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers={k: upstream.headers[k] for k in _PASSED if k in upstream.headers})
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def main(routes: list[tuple[int, str]]) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30),
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=300))
    runners = []
    try:
        for port, upstream in routes:
            app = web.Application()
            app[SESSION], app[UPSTREAM] = session, upstream.rstrip("/")
            app.router.add_post("/{tail:.*}", forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()
        await session.close()


def _route(text: str) -> tuple[int, str]:
    port, _, url = text.partition("=")
    return int(port), url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", type=_route, action="append", required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.route))
