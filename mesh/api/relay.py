"""Pass a peer's answer through to the client, byte for byte."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from mesh.router.proxy import Upstream
from mesh.wire import error_event

log = logging.getLogger(__name__)


async def relay(request: web.Request, upstream: Upstream, *,
                headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=headers)
    peer_failed = complete = False
    # The hot loop: one read and one write per chunk the peer sends; no async
    # generator or per-chunk try in between (each costs a frame per token).
    content = upstream.response.content
    write = response.write
    try:
        await response.prepare(request)
        if upstream.first_chunk:
            await write(upstream.first_chunk)
        try:
            while chunk := await content.readany():
                await write(chunk)  # raises if our client has gone: nothing to relay to
            complete = True
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            peer_failed = True
            log.warning("peer %s failed mid-answer: %r", upstream.peer.node_id[:12], exc)
    finally:
        # Unless the peer's answer was read to its end, drop that connection:
        # the peer then sees its client leave and stops generating.
        upstream.release(failed=peer_failed, complete=complete)
    if peer_failed:
        if not upstream.is_event_stream:
            raise ConnectionResetError("peer failed mid-answer")  # cut the body short
        # The client already has bytes: end with an error event, never a silent [DONE].
        await response.write(error_event(
            "the node serving this answer failed mid-stream; the answer is incomplete",
            code="upstream_failed"))
    return response
