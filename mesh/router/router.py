"""The router: keeps the peer table fresh in the background and plans each request.

Two loops feed the table: one reads every node record from the DHT each
`refresh_interval_s` (joins become routable within about that long), one
probes every peer's `/health` each `probe_interval_s` (a killed peer is
routed around within about that long, and any request that reaches it
first moves on to the next candidate before the client sees a byte).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import urlsplit

from mesh.dht.records import NodeRecord
from mesh.errors import BadRequest, ModelNotFound, NoRoute
from mesh.local.engine import Engine
from mesh.router.peers import Candidate, PeerTable
from mesh.router.proxy import Proxy
from mesh.router.select import choose_route
from mesh.wire import Strategy

log = logging.getLogger(__name__)

# Providers a load_balanced decision looks at (see PeerTable.candidates).
ROUTE_SAMPLE = 8


class RecordSource(Protocol):
    async def all_nodes(self) -> list[NodeRecord]: ...

    async def providers(self, model_id: str) -> list[NodeRecord]: ...

    async def node(self, node_id: str) -> NodeRecord | None: ...


@dataclass(frozen=True, slots=True)
class RouterTiming:
    # A full read of the DHT is 16 lookups: done rarely. New nodes are learnt
    # sooner, from their first health probe of us (heard_from).
    refresh_interval_s: float = 5.0
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    relearn_after_s: float = 5.0


class Router:
    def __init__(self, *, node_id: str, own_url: str, engine: Engine, records: RecordSource,
                 table: PeerTable, proxy: Proxy, timing: RouterTiming,
                 rng: random.Random | None = None) -> None:
        self.node_id = node_id
        self._own_url_is_loopback = _is_loopback_url(own_url)
        self.table = table
        self.proxy = proxy
        self._engine = engine
        self._records = records
        self._timing = timing
        self._rng = rng or random.Random()
        self._tasks: list[asyncio.Task[None]] = []
        self._learning: dict[str, float] = {}  # node id -> when we last looked it up
        self._lookups: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [asyncio.create_task(self._refresh_loop(), name="router-refresh"),
                       asyncio.create_task(self._probe_loop(), name="router-probe")]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._lookups]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    def heard_from(self, node_id: str) -> None:
        """A node probed us. If we do not know it, it probably just joined: read
        its record from the DHT now rather than at the next full refresh."""
        now = time.monotonic()
        if (node_id == self.node_id or self.table.knows_node(node_id)
                or now - self._learning.get(node_id, -1e9) < self._timing.relearn_after_s):
            return
        if len(self._learning) > 4096:
            self._learning.clear()
        self._learning[node_id] = now
        self._background(self._learn(node_id))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="router-lookup")
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _forget_if_withdrawn(self, node_id: str) -> None:
        """A peer stopped answering: if its DHT record is gone too, it left cleanly
        (it withdrew at shutdown), so drop it now; a crashed peer stays, marked
        unhealthy, until its entries expire."""
        try:
            record = await self._records.node(node_id)
        except Exception:
            return
        if record is None:
            self.table.forget(node_id)
            log.info("peer %s left the mesh", node_id[:12])

    async def _learn(self, node_id: str) -> None:
        try:
            record = await self._records.node(node_id)
        except Exception:
            log.debug("lookup of new peer %s failed", node_id[:12], exc_info=True)
            return
        if record is not None and self._reachable(record):
            self.table.add_record(record)
            log.info("learnt new peer %s at %s", node_id[:12], record.url)

    # -- the request path ------------------------------------------------

    def local_candidate(self, model_id: str) -> Candidate | None:
        if model_id != self._engine.model.id:
            return None
        stats = self._engine.stats()
        return Candidate(node_id=self.node_id, url=None,
                         outstanding=stats.queue_depth + stats.active_requests,
                         capacity=stats.capacity, tokens_per_second=stats.tokens_per_second,
                         latency_s=0.0)

    async def plan(self, model_id: str, strategy: Strategy) -> list[Candidate]:
        """Where to try `model_id`, best first. Raises when nowhere can serve it."""
        local = self.local_candidate(model_id)
        if strategy == "local":
            if local is None:
                raise BadRequest(
                    f"strategy 'local': this node does not serve {model_id!r} "
                    f"(it serves {self._engine.model.id!r}); use load_balanced or fastest",
                    param="strategy", code="model_not_local")
            return [local]
        # A decision reads at most ROUTE_SAMPLE providers however large the pool:
        # a random sample for load_balanced (power of two choices needs two, the
        # proxy tries at most three), the top of a cached ranking for fastest.
        if strategy == "fastest":
            peers = self.table.fastest(model_id, limit=ROUTE_SAMPLE)
        else:
            peers = self.table.candidates(model_id, sample=ROUTE_SAMPLE, rng=self._rng)
        if local is None and not peers and not self.table.knows_model(model_id):
            # The one DHT round trip the request path may take: a model we have not heard of.
            self.table.merge_records(
                r for r in await self._records.providers(model_id) if self._reachable(r))
            peers = self.table.candidates(model_id)
            if not peers and not self.table.knows_model(model_id):
                raise ModelNotFound(f"the model {model_id!r} is not served anywhere in the mesh",
                                    param="model")
        route = choose_route(strategy, local=local, peers=peers, rng=self._rng)
        if not route:
            raise NoRoute(f"every provider of {model_id!r} is unreachable right now; "
                          "retry shortly", retry_after_s=2)
        return route

    def model_ids(self) -> list[str]:
        """Every model this node can serve, locally or through a healthy peer."""
        ids = {self._engine.model.id}
        ids.update(m.id for v in self.table.views() if v.healthy for m in v.record.models)
        return sorted(ids)

    # -- background ------------------------------------------------------

    async def refresh(self) -> None:
        try:
            records = await self._records.all_nodes()
        except Exception:  # a lookup bug must not kill the loop
            log.warning("peer refresh failed", exc_info=True)
            return
        self.table.merge_records(r for r in records if self._reachable(r))

    def _reachable(self, record: NodeRecord) -> bool:
        """A loopback URL is only meaningful to nodes on loopback themselves:
        from a LAN node it would dial itself (or whatever listens there)."""
        if self._own_url_is_loopback or not _is_loopback_url(record.url):
            return True
        log.debug("ignoring %s: it advertises loopback URL %s", record.node_id[:12], record.url)
        return False

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._timing.refresh_interval_s)
            await self.refresh()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self._timing.probe_interval_s)
            urls = self.table.urls()
            answered = await asyncio.gather(*(
                self.proxy.probe(node_id, url, timeout_s=self._timing.probe_timeout_s)
                for node_id, url in urls.items()))
            for node_id, ok in zip(urls, answered):
                if not ok:
                    self._background(self._forget_if_withdrawn(node_id))


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
