"""Discovery: the node's one door to the DHT. Nothing outside mesh/dht imports kademlia.

Design (the stock library keeps one value per key for a week; we need "every
node serving model X, alive now"):
- Multi-writer keys. A key holds one entry per writer (storage.py), with a
  RELATIVE ttl that each holder turns into its own expiry, so clock skew does
  not matter. Per writer the highest seq (wall-clock ns) wins; tombstones are
  entries. Every STORE carries one writer's entry (~300 B).
- Reads visit all k closest holders (crawl.py), merge by writer, and page
  through the rest with a writer-id cursor (swarm.py). Entries are validated
  (a record written by the node it describes) before merging, so garbage
  cannot shadow a real entry. Peers speak our own RPC names (protocol.py):
  stock kademlia nodes cannot join, and their garbage is counted, not raised.

Lifecycle: `start` binds the UDP socket (OSError first), bootstraps (a dead
bootstrap list is not fatal), publishes once, then runs until `stop`:
- `_heartbeat_loop` republishes every heartbeat_interval (jittered 0-15 %
  early), or at once after `publish_soon`. Entries live entry_ttl (default 3
  heartbeats + 1 s), so a node that dies without a word vanishes from every
  view within entry_ttl of its last heartbeat (1.6 s ttl in tests: gone
  1.6 s after SIGKILL). Keys dropped since the last publish get tombstones.
- `_rebootstrap_loop` re-joins through the bootstrap list (host names
  re-resolved each time) whenever the routing table is empty, and every
  HEAL_INTERVAL pings bootstrap peers missing from the table, so a restarted
  seed node does not leave the swarm split in two.
`stop` sends tombstones straight to the holders of our entries (bounded by
WITHDRAW_TIMEOUT): other nodes stop listing us at once.

Keys (records.py): `node:<id>`, `model:<id>` and `all_nodes:<shard>` all hold
the full compact record, so `providers()` is one lookup, not one per
provider. `all_nodes` is 16 shards by hash of node id (no ever-growing key),
read in parallel: 16 lookups, the price of a view of the whole swarm.

200 providers of one model (tests/dht/test_scale.py, 252 B records): each
holder serves them in 9 pages, every reply datagram 5.7-7.7 KB (< 8,000 B
budget, < rpcudp's 8,192 B); the reader takes page 1 from each of the k
closest holders, the other 8 from the alpha closest, and sees 200 of 200
(~45 ms on loopback with the 5-node swarm in one process). A key holds at
most 1,024 writers, a lookup drains at most 64 pages per holder. On real
networks 8 KB datagrams fragment (6 IP fragments): one lost fragment costs
that page an rpc_timeout, and the reader makes do with the other holders'
pages.

Lookups never raise on peer behaviour: a dead peer costs one rpc_timeout and
leaves the routing table, garbage counts as silence, and a total failure
returns [] or None (counted in status().lookup_errors). Measured on loopback,
30 nodes in one process on 2 cores: node() p50 8 ms, providers() (30
providers) 19 ms, all_nodes() 150 ms; most of it is the other 29 nodes' CPU
(umsgpack is pure Python), which a real deployment spreads over machines.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

from kademlia.node import Node
from kademlia.utils import digest
from pydantic import BaseModel, ConfigDict

from mesh.dht.address import BootstrapResolveError, resolve_bootstrap
from mesh.dht.records import NodeRecord, RecordTooLarge, decode_record, encode_record, keys_for, model_key, node_key
from mesh.dht.records import all_nodes_keys
from mesh.dht.storage import MAX_TTL, Entry
from mesh.dht.swarm import Swarm

log = logging.getLogger(__name__)

RecordSource = Callable[[], NodeRecord]

WITHDRAW_TIMEOUT = 1.0
MAX_BOOTSTRAP_PEERS = 16
HEAL_INTERVAL = 30.0


class DhtStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    node_id: str
    dht_port: int
    routing_table_size: int
    peers: tuple[str, ...]
    keys_published: tuple[str, ...]
    last_publish_at: float | None
    publishes: int
    publish_errors: int
    lookups: int
    lookup_errors: int
    bootstrap_nodes: tuple[str, ...]
    bootstrapped: bool


class Discovery:
    def __init__(
        self,
        *,
        node_id: str,
        listen_host: str = "0.0.0.0",
        port: int,
        bootstrap: Sequence[tuple[str, int]] = (),
        heartbeat_interval: float = 10.0,
        entry_ttl: float | None = None,
        rpc_timeout: float = 1.0,
        ksize: int = 20,
        alpha: int = 3,
    ) -> None:
        if not node_id or len(node_id) > 128:
            raise ValueError("node_id must be 1-128 characters")
        if heartbeat_interval <= 0 or rpc_timeout <= 0:
            raise ValueError("heartbeat_interval and rpc_timeout must be positive")
        self._node_id = node_id
        self._listen_host = listen_host
        self._requested_port = port
        self._bootstrap = tuple(bootstrap)
        self._heartbeat = heartbeat_interval
        self._ttl = entry_ttl if entry_ttl is not None else 3 * heartbeat_interval + 1.0
        if not 0 < self._ttl <= MAX_TTL:
            raise ValueError(f"entry_ttl must be in (0, {MAX_TTL:.0f}] s: peers refuse longer ones")
        if self._ttl <= heartbeat_interval:
            log.warning("entry_ttl %.1f s <= heartbeat %.1f s: entries will blink out", self._ttl, heartbeat_interval)
        self._retry_interval = min(heartbeat_interval, 5.0)
        self._swarm = Swarm(
            node_id=digest(node_id), ksize=ksize, alpha=alpha, rpc_timeout=rpc_timeout, accept=_valid_entry
        )
        self._source: RecordSource | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._started = self._stopped = False
        self._seq = 0
        self._published: tuple[str, ...] = ()
        self._holders: dict[str, list[Node]] = {}  # key -> nodes our last STORE went to
        self._written: set[str] = set()  # keys that may hold a live entry of ours
        self._bootstrapped = not self._bootstrap
        self._last_publish_at: float | None = None
        self._publishes = self._publish_errors = self._lookups = self._lookup_errors = 0

    # -- lifecycle ---------------------------------------------------------
    async def start(self, record_source: RecordSource | None) -> None:
        """Join the swarm; with `record_source=None` this is a silent member
        (a client or an operator tool): it routes and reads, and publishes nothing."""
        if self._started:
            raise RuntimeError("Discovery already started")
        await self._swarm.listen(self._listen_host, self._requested_port)  # OSError first
        self._started = True
        self._source = record_source
        log.info("DHT listening on %s:%d as %s", self._listen_host, self.port, self._node_id)
        try:
            if self._bootstrap and not await self._join():
                log.warning("no bootstrap peer answered %s; retrying in the background", self._bootstrap_labels())
            if self._source is not None:
                await self._publish()
        except BaseException:
            self._swarm.close()
            raise
        self._tasks = [
            asyncio.create_task(self._rebootstrap_loop(), name=f"dht-rebootstrap-{self._node_id}"),
        ]
        if self._source is not None:
            self._tasks.append(
                asyncio.create_task(self._heartbeat_loop(), name=f"dht-heartbeat-{self._node_id}"))

    @property
    def port(self) -> int:
        if not self._started:
            raise RuntimeError("Discovery not started")
        return self._swarm.port

    def publish_soon(self) -> None:
        """Publish now rather than at the next heartbeat (call from the event loop's thread)."""
        self._wake.set()

    async def stop(self) -> None:
        if not self._started or self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._withdraw()
        finally:
            self._swarm.close()
        log.info("DHT stopped: %s withdrawn", ", ".join(sorted(self._written)) or "nothing")

    async def _withdraw(self) -> None:
        """Tombstone our keys on their holders, at once; whoever misses it sees the entry expire."""
        tombstone = Entry(writer=self._node_id, seq=self._next_seq(), ttl=self._ttl, value=None)
        stores = []
        for key in sorted(self._written):
            dkey = digest(key)
            nodes = {node.id: node for node in [*self._holders.get(key, []), *self._swarm.neighbors(dkey)]}
            stores.append(self._swarm.store_at(list(nodes.values()), dkey, tombstone))
        if not stores:
            return
        tasks = [asyncio.ensure_future(store) for store in stores]
        _, pending = await asyncio.wait(tasks, timeout=WITHDRAW_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- publishing --------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            # Jitter (early only, so entry_ttl keeps its margin): nodes started
            # together by one compose file should not publish in lockstep.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._heartbeat * random.uniform(0.85, 1.0))
            self._wake.clear()
            try:
                await self._publish()
                self._swarm.storage.cull()
            except Exception:  # the loop must outlive any one bad round
                log.warning("DHT publish round failed", exc_info=True)
                self._publish_errors += 1

    async def _publish(self) -> None:
        assert self._source is not None
        try:
            record = self._source()
            if record.node_id != self._node_id:
                raise ValueError(f"record node_id {record.node_id!r} is not ours ({self._node_id!r})")
            record = record.model_copy(update={"expires_at": time.time() + self._ttl})
            value = encode_record(record)
        except (RecordTooLarge, ValueError) as exc:
            log.error("cannot publish node record: %s", exc)
            self._publish_errors += 1
            return
        except Exception:
            log.exception("record source failed")
            self._publish_errors += 1
            return
        keys = keys_for(record)
        seq = self._next_seq()
        entry = Entry(writer=self._node_id, seq=seq, ttl=self._ttl, value=value)
        tombstone = entry.model_copy(update={"value": None})
        gone = [key for key in self._published if key not in keys]
        jobs = [(key, entry) for key in keys] + [(key, tombstone) for key in gone]
        self._written.update(keys)  # before any STORE: a stop() mid-publish withdraws these too
        results = await asyncio.gather(*(self._swarm.put(digest(k), e) for k, e in jobs), return_exceptions=True)
        failed = 0
        for (key, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("publishing %s failed: %r", key, result)
                failed += 1
            else:
                self._holders[key] = result.nodes
                failed += result.acks == 0
        for key in gone:
            self._holders.pop(key, None)
        self._written = set(keys)
        self._published = keys
        self._publishes += 1
        self._publish_errors += bool(failed)
        self._last_publish_at = time.time()
        log.debug("published %s (seq %d, %d failed)", keys, seq, failed)

    def _next_seq(self) -> int:
        # Wall-clock nanoseconds, strictly increasing: a restarted node
        # outranks its own stale replicas without remembering anything.
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    # -- joining -----------------------------------------------------------
    async def _rebootstrap_loop(self) -> None:
        heal_every = max(1, round(HEAL_INTERVAL / self._retry_interval))
        rounds = 0
        while True:
            await asyncio.sleep(self._retry_interval)
            rounds += 1
            try:
                if self._bootstrap and not self._swarm.peers():
                    if await self._join():
                        log.info("joined the swarm via %s", self._bootstrap_labels())
                        self.publish_soon()
                elif self._bootstrap and rounds % heal_every == 0:
                    await self._heal()
                await self._swarm.refresh_buckets()
            except Exception:  # the loop must outlive any one bad round
                log.warning("DHT maintenance round failed", exc_info=True)

    async def add_peers(self, peers: Sequence[tuple[str, int]]) -> bool:
        """Peers found another way (the LAN beacon): join through the ones not yet
        in the routing table and keep them as bootstrap peers for later healing."""
        known = {(node.ip, node.port) for node in self._swarm.peers()}
        new = [peer for peer in peers if peer not in known and peer not in self._bootstrap]
        if not new or not self._started or self._stopped:
            return False
        self._bootstrap = (*self._bootstrap, *new)[-MAX_BOOTSTRAP_PEERS:]
        joined = await self._swarm.bootstrap(new)
        if joined:
            self._bootstrapped = True
            log.info("joined the swarm via %s", ", ".join(_label(h, p) for h, p in new))
            self.publish_soon()
        return joined

    async def _join(self) -> bool:
        joined = await self._swarm.bootstrap(await self._resolved())
        self._bootstrapped = self._bootstrapped or joined
        return joined

    async def _heal(self) -> None:
        known = {(node.ip, node.port) for node in self._swarm.peers()}
        missing = [addr for addr in await self._resolved() if addr not in known]
        await asyncio.gather(*(self._swarm.ping(addr) for addr in missing))

    async def _resolved(self) -> list[tuple[str, int]]:
        """Bootstrap pairs as IPs, resolved afresh each time; names not (yet) in DNS are skipped."""
        out = []
        for pair in self._bootstrap:
            try:
                out.extend(await resolve_bootstrap([pair]))
            except BootstrapResolveError as exc:
                log.debug("%s", exc)
        return out

    def _bootstrap_labels(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self._bootstrap)

    # -- lookups -----------------------------------------------------------
    async def providers(self, model_id: str) -> list[NodeRecord]:
        records = self._records(await self._lookup(model_key(model_id)))
        return sorted((r for r in records if r.serves(model_id)), key=lambda r: r.node_id)

    async def all_nodes(self) -> list[NodeRecord]:
        shards = await asyncio.gather(*(self._lookup(key) for key in all_nodes_keys()))
        best: dict[str, NodeRecord] = {}
        for record in self._records([entry for shard in shards for entry in shard]):
            held = best.get(record.node_id)
            if held is None or record.expires_at > held.expires_at:
                best[record.node_id] = record
        return sorted(best.values(), key=lambda r: r.node_id)

    async def node(self, node_id: str) -> NodeRecord | None:
        records = self._records(await self._lookup(node_key(node_id)))
        return next((r for r in records if r.node_id == node_id), None)

    async def _lookup(self, key: str) -> list[Entry]:
        if not self._started or self._stopped:
            raise RuntimeError("Discovery is not running")
        self._lookups += 1
        try:
            result = await self._swarm.get(digest(key))
        except Exception:  # a bug, not a peer: peers cannot make get() raise
            log.warning("lookup of %s failed", key, exc_info=True)
            self._lookup_errors += 1
            return []
        if result.asked and not result.answered:
            self._lookup_errors += 1
        return result.entries

    def _records(self, entries: list[Entry]) -> list[NodeRecord]:
        """Live, valid records; expires_at set on this node's clock from the entry's ttl."""
        now = time.time()
        out = []
        for entry in entries:
            if entry.value is None:
                continue
            record = decode_record(entry.value)
            if record is None or record.node_id != entry.writer:
                log.debug("dropping entry of %s: invalid or not its own record", entry.writer)
                continue
            out.append(record.model_copy(update={"expires_at": now + entry.ttl}))
        return out

    def status(self) -> DhtStatus:
        peers = self._swarm.peers()
        return DhtStatus(
            node_id=self._node_id,
            dht_port=self._swarm.port,
            routing_table_size=len(peers),
            peers=tuple(sorted(_label(node.ip, node.port) for node in peers)),
            keys_published=self._published,
            last_publish_at=self._last_publish_at,
            publishes=self._publishes,
            publish_errors=self._publish_errors,
            lookups=self._lookups,
            lookup_errors=self._lookup_errors,
            bootstrap_nodes=tuple(_label(host, port) for host, port in self._bootstrap),
            bootstrapped=self._bootstrapped,
        )


def _valid_entry(entry: Entry) -> bool:
    """A tombstone, or a valid record written by the node it describes."""
    if entry.value is None:
        return True
    record = decode_record(entry.value)
    return record is not None and record.node_id == entry.writer


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
