"""Talking to peers over HTTP: the only aiohttp client user in LlamaMesh.

`open_stream` sends the client's request body, unchanged, to the first
candidate and walks down the list (tenacity) while a peer fails before its
first body byte: connect errors, time-outs, 5xx, 429, and 404 (a stale
record). Only once a peer has produced a byte is it committed to; from
there the bytes pass through untouched (no SSE parsing, no re-encoding).

Timeouts are per connect and per read: a long generation is never cut by a
total deadline, a silent peer is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from mesh.errors import NoRoute, UpstreamFailed
from mesh.router.peers import Candidate, PeerTable

log = logging.getLogger(__name__)

VIA_HEADER = "X-Mesh-Via"
NODE_HEADER = "X-Mesh-Node"
_RETRY_STATUSES = frozenset({404, 429, 500, 502, 503, 504})
_PASSED_HEADERS = ("Content-Type", "Cache-Control", "X-Accel-Buffering", NODE_HEADER,
                   "Retry-After")


class _PeerFailed(Exception):
    def __init__(self, peer: Candidate, reason: str, *, status: int | None = None) -> None:
        super().__init__(f"{peer.node_id[:12]} {reason}")
        self.peer = peer
        self.status = status


@dataclass(slots=True)
class Upstream:
    """A peer's answer, committed to: status, headers, and the bytes to relay."""

    response: aiohttp.ClientResponse
    first_chunk: bytes
    peer: Candidate
    attempts: int
    _table: PeerTable = field(repr=False)
    _released: bool = False

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def is_event_stream(self) -> bool:
        return self.response.content_type == "text/event-stream"

    def headers(self) -> dict[str, str]:
        return {k: self.response.headers[k] for k in _PASSED_HEADERS if k in self.response.headers}

    def release(self, *, failed: bool, complete: bool) -> None:
        """Done with the peer: keep the connection only if its answer was read whole."""
        if self._released:
            return
        self._released = True
        if complete:
            self.response.release()
        else:
            self.response.close()
        self._table.request_ended(self.peer.node_id, failed=failed)


class PeerHealth(BaseModel, frozen=True):
    """The fields of a peer's `/health` the router uses; the rest is ignored."""

    node_id: str
    queue_depth: int = 0
    active_requests: int = 0
    capacity: int = 1
    tokens_per_second: float = 0.0


class Proxy:
    def __init__(self, session: aiohttp.ClientSession, table: PeerTable, *, node_id: str,
                 connect_timeout_s: float = 2.0, read_timeout_s: float = 300.0,
                 max_attempts: int = 3) -> None:
        self._session = session
        self._table = table
        self._node_id = node_id
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s,
            sock_read=read_timeout_s)

    async def open_stream(self, candidates: Sequence[Candidate], path: str,
                          body: bytes) -> Upstream:
        remaining = iter(candidates)
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(min(self._max_attempts, len(candidates))),
            wait=wait_exponential(multiplier=0.005, max=0.05),
            retry=retry_if_exception_type(_PeerFailed),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    return await self._try(next(remaining), path, body, attempts)
        except _PeerFailed as exc:
            if exc.status in (429, 503):
                raise NoRoute(f"every provider is busy ({attempts} tried); retry shortly",
                              retry_after_s=1) from None
            raise UpstreamFailed(
                f"no provider could serve the request ({attempts} tried; last: {exc})") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _try(self, peer: Candidate, path: str, body: bytes, attempt: int) -> Upstream:
        assert peer.url is not None
        self._table.request_started(peer.node_id)
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._session.post(
                peer.url + path, data=body, timeout=self._timeout,
                headers={"Content-Type": "application/json", VIA_HEADER: self._node_id})
            if response.status in _RETRY_STATUSES:
                raise _PeerFailed(peer, f"answered {response.status}", status=response.status)
            first = await response.content.readany()
        except _PeerFailed as exc:
            assert response is not None
            response.release()
            # A busy peer is healthy: no breaker, just the next candidate.
            self._table.request_ended(peer.node_id, failed=exc.status not in (429, 503))
            log.info("peer %s failed before the first byte (attempt %d): %s",
                     peer.node_id[:12], attempt, exc)
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            if response is not None:
                response.close()
            self._table.request_ended(peer.node_id, failed=True)
            log.info("peer %s unreachable (attempt %d): %r", peer.node_id[:12], attempt, exc)
            raise _PeerFailed(peer, type(exc).__name__) from exc
        except BaseException:
            if response is not None:
                response.close()
            self._table.request_ended(peer.node_id, failed=False)
            raise
        return Upstream(response=response, first_chunk=first, peer=peer, attempts=attempt,
                        _table=self._table)

    async def probe(self, node_id: str, url: str, *, timeout_s: float) -> bool:
        """GET /health and feed the result to the peer table. False when the peer
        refused or answered wrongly (it may have left); a slow answer is not that."""
        started = time.perf_counter()
        try:
            async with self._session.get(
                    url + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s),
                    headers={VIA_HEADER: self._node_id}) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(response.request_info, (),
                                                      status=response.status)
                health = PeerHealth.model_validate_json(await response.read())
        except asyncio.TimeoutError:
            # Busy, not dead: a loaded node (or our own loaded loop) answers late.
            self._table.probe_timed_out(node_id)
            return True
        except (aiohttp.ClientError, OSError, ValidationError):
            self._table.probe_failed(node_id)
            return False
        if health.node_id != node_id:
            # Someone else answers at that URL (a stale record, or a peer advertising
            # an address that reaches a different node): not the peer we meant.
            log.info("probe of %s at %s reached node %s instead", node_id[:12], url,
                     health.node_id[:12])
            self._table.probe_failed(node_id)
            return False
        self._table.probe_succeeded(
            node_id, latency_s=time.perf_counter() - started, queue_depth=health.queue_depth,
            active_requests=health.active_requests, capacity=health.capacity,
            tokens_per_second=health.tokens_per_second)
        return True
