"""One Kademlia node with multi-writer keys: socket, routing table, entry store, get/put.

This replaces `kademlia.network.Server` rather than subclassing it: nearly
every Server method had to change (`set` type-checks and stores one value,
`get` answers from the local copy and takes the most common value,
`bootstrap` crashes on a garbage ping reply, `refresh_table` re-stores every
replica hourly). What is kept from the library is its routing table, node
heap and protocol base.

- `put(key, entry)`: find the k closest nodes, STORE the single entry on each
  (and here, when this node is among them). One writer's entry per request
  keeps every STORE far below rpcudp's 8192 B limit.
- `get(key)`: crawl the k closest, drain the remaining pages of the `alpha`
  closest holders that said "more", check each distinct entry once with
  `accept`, and merge with the local copy by writer (storage.merge). A
  reader therefore sees all writers of a key, up to MAX_PAGES pages per
  holder, and an invalid entry never outranks a valid one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kademlia.node import Node

from mesh.dht.crawl import CrawlResult, crawl
from mesh.dht.protocol import FindReply, MeshProtocol
from mesh.dht.storage import Entry, EntryStore, merge

log = logging.getLogger(__name__)

MAX_PAGES = 64  # per holder and lookup: ~1,600 typical records, above MAX_WRITERS_PER_KEY
_RCVBUF = 1 << 20  # a lookup may receive k ~8 KB pages at once


@dataclass(frozen=True, slots=True)
class Lookup:
    entries: list[Entry]  # newest per writer, tombstones included
    asked: int  # peers asked in the crawl
    answered: int


@dataclass(frozen=True, slots=True)
class Placement:
    nodes: list[Node]  # the k closest the crawl found (STOREs went there)
    acks: int  # successful STOREs, this node's own copy included


class Swarm:
    def __init__(
        self,
        *,
        node_id: bytes,
        ksize: int,
        alpha: int,
        rpc_timeout: float,
        accept: Callable[[Entry], bool] = lambda _: True,
    ) -> None:
        self.node = Node(node_id)
        # Checked on every entry stored here and every entry in a reply,
        # before merging: an invalid entry must not outrank a valid one.
        self.accept = accept
        self.ksize = ksize
        self.alpha = alpha
        self.rpc_timeout = rpc_timeout
        # A lookup in a healthy swarm takes a few rounds; each round costs at
        # most one rpc_timeout. Past this, the crawl returns what it has.
        self.lookup_timeout = 5 * rpc_timeout
        self.storage = EntryStore(accept=accept)
        self.protocol = MeshProtocol(self.node, self.storage, ksize, rpc_timeout=rpc_timeout)
        self.port = 0

    async def listen(self, host: str, port: int) -> int:
        """Bind the UDP socket (OSError if taken) and return the bound port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self.protocol, local_addr=(host, port))
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        except (OSError, AttributeError):  # capped or refused by the OS: the default still works
            pass
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def close(self) -> None:
        self.protocol.close()

    def peers(self) -> list[Node]:
        return [node for bucket in self.protocol.router.buckets for node in bucket.get_nodes()]

    def neighbors(self, key: bytes) -> list[Node]:
        return self.protocol.router.find_neighbors(Node(key), k=self.ksize)

    async def bootstrap(self, addrs: Sequence[tuple[str, int]]) -> bool:
        """Ping addrs, then look ourselves up through whoever answered. True if anyone did."""
        found = await asyncio.gather(*(self.protocol.ping_address(addr) for addr in addrs))
        seeds = [node for node in found if node is not None]
        for node in seeds:
            self.protocol.welcome_if_new(node)
        if seeds:
            await self._crawl_nodes(self.node, seeds)
        return bool(seeds)

    async def ping(self, addr: tuple[str, int]) -> bool:
        """Make sure addr knows us and we know it (heals a swarm split by a restarted peer)."""
        node = await self.protocol.ping_address(addr)
        if node is not None:
            self.protocol.welcome_if_new(node)
        return node is not None

    async def refresh_buckets(self) -> None:
        """Look up a random id in each bucket untouched for an hour (paper 2.3)."""
        for node_id in self.protocol.get_refresh_ids():
            target = Node(node_id)
            await self._crawl_nodes(target, self.protocol.router.find_neighbors(target, self.alpha))

    async def put(self, key: bytes, entry: Entry) -> Placement:
        target = Node(key)
        seeds = self.neighbors(key)
        nodes = (await self._crawl_nodes(target, seeds)).closest if seeds else []
        acks = 0
        mine = self.node.distance_to(target)
        if len(nodes) < self.ksize or mine < max(node.distance_to(target) for node in nodes):
            self.storage.put(key, entry)
            acks += 1
        stored = await asyncio.gather(*(self.protocol.call_store_entry(node, key, entry) for node in nodes))
        return Placement(nodes, acks + sum(stored))

    async def store_at(self, nodes: Sequence[Node], key: bytes, entry: Entry) -> int:
        """STORE entry on nodes directly, without a crawl (withdrawals at shutdown)."""
        self.storage.put(key, entry)
        stored = await asyncio.gather(*(self.protocol.call_store_entry(node, key, entry) for node in nodes))
        return sum(stored)

    async def get(self, key: bytes) -> Lookup:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lookup_timeout
        entries = self.storage.live(key)
        seeds = self.neighbors(key)
        if not seeds:
            return Lookup(list(merge(entries).values()), 0, 0)

        async def ask(node: Node) -> FindReply | None:
            return await self.protocol.call_find_entries(node, key, "")

        result = await crawl(
            target=Node(key),
            seeds=seeds,
            self_id=self.node.id,
            ksize=self.ksize,
            alpha=self.alpha,
            ask=ask,
            deadline=deadline,
        )
        holders = [node for node in result.closest if result.replies[node.id].more][: self.alpha]
        pages = await asyncio.gather(*(self._drain(node, key, result.replies[node.id], deadline) for node in holders))
        heard = [entry for reply in result.replies.values() for entry in reply.entries]
        heard.extend(entry for page in pages for entry in page)
        entries.extend(self._accepted(heard))
        return Lookup(list(merge(entries).values()), result.asked, len(result.replies))

    def _accepted(self, entries: list[Entry]) -> list[Entry]:
        """Entries that pass `accept`, each distinct one checked once: the k holders
        mostly send the same entries, and checking means decoding a record."""
        distinct: dict[tuple[str, int, bytes | None], Entry] = {}
        for entry in entries:
            seen = distinct.get((entry.writer, entry.seq, entry.value))
            if seen is None or entry.ttl > seen.ttl:
                distinct[(entry.writer, entry.seq, entry.value)] = entry
        return [entry for entry in distinct.values() if self.accept(entry)]

    async def _drain(self, node: Node, key: bytes, reply: FindReply, deadline: float) -> list[Entry]:
        """The pages after the first one, following the writer-id cursor."""
        loop = asyncio.get_running_loop()
        out: list[Entry] = []
        for _ in range(MAX_PAGES):
            if not (reply.more and reply.entries) or loop.time() >= deadline:
                break
            cursor = reply.entries[-1].writer
            page = await self.protocol.call_find_entries(node, key, cursor)
            if page is None or any(entry.writer <= cursor for entry in page.entries):
                break  # silent, or a cursor that does not move forward: stop paging this holder
            out.extend(page.entries)
            reply = page
        return out

    async def _crawl_nodes(self, target: Node, seeds: Sequence[Node]) -> CrawlResult:
        async def ask(node: Node) -> FindReply | None:
            return await self.protocol.call_find_node(node, target)

        return await crawl(
            target=target,
            seeds=seeds,
            self_id=self.node.id,
            ksize=self.ksize,
            alpha=self.alpha,
            ask=ask,
            deadline=asyncio.get_running_loop().time() + self.lookup_timeout,
        )
