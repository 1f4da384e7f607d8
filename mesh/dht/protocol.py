"""The wire: `MeshProtocol`, a KademliaProtocol that never trusts a datagram.

What it changes in the library, and why:
- Every datagram is parsed inline under one guard. rpcudp parses in a task
  and logs a traceback per malformed packet (or raises MalformedMessage into
  the void); here garbage is counted and summarised once a minute at INFO.
- Requests dispatch through an allowlist of our own RPC names (RPC below,
  "lm1_*"). Stock kademlia nodes (a LlamaNet node left on the same port, say)
  speak "ping"/"store"/"find_value": we never answer them and they never
  answer us, so they cannot enter our routing tables, cost our lookups
  timeouts, or overwrite multi-writer keys with a single value.
- Every reply we consume is validated: node triples need a 20-byte id, a
  literal IP and a port (the stock crawler raises on garbage find_node
  replies); entries go through `Entry.from_wire`. A garbage reply counts as
  no reply, so the peer also leaves the routing table.
- The RPC timeout is ours (default 1 s, rpcudp's is a fixed 5 s), and a late
  reply or a timer for a cancelled call is a no-op instead of an
  InvalidStateError traceback.
- `welcome_if_new` hashes the key once (the library digests the digest, so
  new nodes almost never got the keys they should hold) and pushes each
  writer's entry separately, with the ttl it has left.
- find_entries replies stay under REPLY_LIMIT: the closer-node list on the
  first page only, then entries paged by writer id (see storage.EntryStore.page).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import umsgpack  # rpcudp's codec: the wire format every kademlia peer speaks
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from mesh.dht.storage import Entry, EntryStore

log = logging.getLogger(__name__)

REQUEST_LIMIT = 8192  # rpcudp refuses to send [name, args] packed larger than this
REPLY_LIMIT = 8000  # whole reply datagram, header included: below the same 8 KiB
_REQUEST, _REPLY = b"\x00", b"\x01"
_ID_BYTES = 20
_MAX_CURSOR = 256
HANDOVER_WINDOW = 16  # STOREs in flight per newcomer in welcome_if_new


class RPC:
    """Wire names of our RPCs; the "1" versions the protocol."""

    ping = "lm1_ping"
    find_node = "lm1_find_node"
    store_entry = "lm1_store"
    find_entries = "lm1_find"


@dataclass(frozen=True, slots=True)
class FindReply:
    """A validated find_node / find_entries answer."""

    nodes: tuple[Node, ...]
    entries: tuple[Entry, ...] = ()
    more: bool = False


@dataclass(slots=True)
class ProtocolStats:
    garbage: int = 0  # datagrams or replies ignored as malformed
    timeouts: int = 0
    max_reply_bytes: int = 0  # largest reply datagram this node sent
    _since_log: int = field(default=0, repr=False)
    _last_log: float = field(default=float("-inf"), repr=False)


class MeshProtocol(KademliaProtocol):
    def __init__(self, source_node: Node, storage: EntryStore, ksize: int, *, rpc_timeout: float) -> None:
        super().__init__(source_node, storage, ksize)
        self.storage: EntryStore = storage
        self._wait_timeout = rpc_timeout
        self.stats = ProtocolStats()
        self._pending: dict[bytes, tuple[asyncio.Future[tuple[bool, object]], asyncio.TimerHandle, tuple[str, int]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._family = socket.AF_INET
        self._closed = False
        self._handlers = {
            RPC.ping: self.rpc_ping,
            RPC.find_node: self.rpc_find_node,
            RPC.store_entry: self.rpc_store_entry,
            RPC.find_entries: self.rpc_find_entries,
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._family = sock.family

    def close(self) -> None:
        """Fail every outstanding call, cancel pushes, close the socket."""
        self._closed = True
        for future, timer, _ in self._pending.values():
            timer.cancel()
            if not future.done():
                future.set_result((False, None))
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- incoming ----------------------------------------------------------
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            if len(data) < 1 + _ID_BYTES + 1:
                raise ValueError("short datagram")
            kind, msg_id, body = data[:1], data[1:21], umsgpack.unpackb(data[21:])
            if kind == _REQUEST:
                self._serve(msg_id, body, addr)
            elif kind == _REPLY:
                self._accept_response(msg_id, body, addr)
            else:
                raise ValueError("unknown datagram kind")
        except Exception as exc:  # peer input must never escape into the loop
            self._ignore(addr, exc)

    def _serve(self, msg_id: bytes, body: object, addr: tuple[str, int]) -> None:
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[1], list)):
            raise ValueError("malformed request")
        handler = self._handlers.get(body[0]) if isinstance(body[0], str) else None
        if handler is None:
            raise ValueError(f"unsupported rpc {body[0]!r}")
        packed = _REPLY + msg_id + umsgpack.packb(handler(addr, *body[1]))
        if len(packed) > REQUEST_LIMIT:  # cannot happen with the budgets below; never send it
            log.error("dropping %d B reply to %s (limit %d)", len(packed), body[0], REQUEST_LIMIT)
            return
        self.stats.max_reply_bytes = max(self.stats.max_reply_bytes, len(packed))
        if self.transport is not None and not self._closed:
            self.transport.sendto(packed, addr)

    def _accept_response(self, msg_id: bytes, data: object, address: tuple[str, int]) -> None:
        pending = self._pending.get(msg_id)
        # Only the port is compared: a multi-homed peer bound to 0.0.0.0 may
        # answer from another of its addresses. The random msg id is the check.
        if pending is None or pending[2][1] != address[1]:
            log.debug("ignoring unexpected or late reply from %s", address)
            return
        del self._pending[msg_id]
        future, timer, _ = pending
        timer.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        pending = self._pending.pop(msg_id, None)
        if pending is not None:
            self.stats.timeouts += 1
            if not pending[0].done():
                pending[0].set_result((False, None))

    def _ignore(self, addr: tuple[str, int], reason: object) -> None:
        log.debug("ignored datagram from %s: %s", addr, reason)
        stats = self.stats
        stats.garbage += 1
        stats._since_log += 1
        now = time.monotonic()
        if now - stats._last_log >= 60.0:
            log.info("ignored %d malformed datagram(s); last from %s: %s", stats._since_log, addr, reason)
            stats._since_log, stats._last_log = 0, now

    def _sender(self, addr: tuple[str, int], nodeid: object) -> Node:
        source = Node(_node_id(nodeid), _unmapped(addr[0]), addr[1])
        self.welcome_if_new(source)
        return source

    def rpc_ping(self, sender: tuple[str, int], nodeid: object) -> bytes:
        self._sender(sender, nodeid)
        return self.source_node.id

    # Each handler validates its arguments before welcoming the sender: a
    # malformed request must not earn a routing table slot.
    def rpc_find_node(self, sender: tuple[str, int], nodeid: object, key: object) -> list[tuple[bytes, str, int]]:
        dkey = _node_id(key)
        return self._neighbors(dkey, self._sender(sender, nodeid))

    def rpc_store_entry(self, sender: tuple[str, int], nodeid: object, key: object, entry: object) -> bool:
        dkey, parsed = _node_id(key), Entry.from_wire(entry)
        if parsed is None:
            raise ValueError("malformed entry")
        self._sender(sender, nodeid)
        return self.storage.put(dkey, parsed)

    def rpc_find_entries(self, sender: tuple[str, int], nodeid: object, key: object, after: object) -> list[object]:
        dkey = _node_id(key)
        if not isinstance(after, str) or len(after) > _MAX_CURSOR:
            raise ValueError("bad cursor")
        source = self._sender(sender, nodeid)
        # Closer nodes ride on the first page only; later pages are pure entries.
        nodes = [] if after else self._neighbors(dkey, source)
        overhead = 1 + _ID_BYTES + len(umsgpack.packb([nodes, [], False])) + 5
        entries, more = self.storage.page(dkey, after=after, budget=REPLY_LIMIT - overhead)
        return [nodes, [entry.to_wire() for entry in entries], more]

    def _neighbors(self, key: bytes, exclude: Node) -> list[tuple[bytes, str, int]]:
        return [tuple(n) for n in self.router.find_neighbors(Node(key), exclude=exclude)]

    def welcome_if_new(self, node: Node) -> None:
        """Add node to the routing table; first hand it the entries it should now hold (paper 2.5)."""
        if node.id == self.source_node.id or not self.router.is_new_node(node):
            return
        handover: list[tuple[bytes, Entry]] = []
        for key in self.storage.keys():
            keynode = Node(key)  # key is already a digest: the library hashes it again here
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                farthest = neighbors[-1].distance_to(keynode)
                # With fewer than k known, any newcomer is among the k closest.
                new_node_close = len(neighbors) < self.router.ksize or node.distance_to(keynode) < farthest
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                handover.extend((key, entry) for entry in self.storage.live(key))
        if handover:
            self._spawn(self._hand_over(node, handover))
        self.router.add_contact(node)

    async def _hand_over(self, node: Node, items: list[tuple[bytes, Entry]]) -> None:
        """STORE items on node, HANDOVER_WINDOW at a time: a burst of hundreds of
        datagrams would overflow a newcomer's receive buffer. Stops at the
        first refusal-by-silence: the newcomer is gone, the owners' heartbeats
        will reach it if it comes back."""
        for start in range(0, len(items), HANDOVER_WINDOW):
            window = items[start : start + HANDOVER_WINDOW]
            stored = await asyncio.gather(*(self.call_store_entry(node, key, entry) for key, entry in window))
            if not any(stored) and self.router.is_new_node(node):
                return

    # -- outgoing ----------------------------------------------------------
    async def _call(self, address: tuple[str, int], name: str, *args: object) -> tuple[bool, object]:
        """(True, reply) or (False, None) on timeout, closed socket or unsendable request."""
        if self._closed or self.transport is None or not 0 < address[1] < 65536:
            return False, None  # (a bad port would make asyncio close the transport)
        if _family(address[0]) != self._family:
            if self._family != socket.AF_INET6:
                return False, None  # an IPv6 peer, and we listen on IPv4 only
            address = (f"::ffff:{address[0]}", address[1])  # dual-stack socket, IPv4 peer
        data = umsgpack.packb([name, list(args)])
        if len(data) > REQUEST_LIMIT:
            log.warning("not sending %s: %d B over the %d B request limit", name, len(data), REQUEST_LIMIT)
            return False, None
        loop = asyncio.get_running_loop()
        msg_id = os.urandom(_ID_BYTES)
        future: asyncio.Future[tuple[bool, object]] = loop.create_future()
        timer = loop.call_later(self._wait_timeout, self._timeout, msg_id)
        self._pending[msg_id] = (future, timer, (address[0], address[1]))
        try:
            self.transport.sendto(_REQUEST + msg_id + data, address)
            return await future
        finally:
            if msg_id in self._pending and not future.done():  # cancelled while waiting
                self._pending.pop(msg_id)[1].cancel()

    async def ping_address(self, address: tuple[str, int]) -> Node | None:
        ok, reply = await self._call(address, RPC.ping, self.source_node.id)
        if not ok or not _is_node_id(reply) or reply == self.source_node.id:
            return None
        return Node(reply, address[0], address[1])

    async def call_ping(self, node_to_ask: Node) -> bool:
        ok, reply = await self._call((node_to_ask.ip, node_to_ask.port), RPC.ping, self.source_node.id)
        return self._settle(node_to_ask, ok and reply == node_to_ask.id)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> FindReply | None:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, reply = await self._call(address, RPC.find_node, self.source_node.id, node_to_find.id)
        nodes = _parse_nodes(reply, self.router.ksize) if ok else None
        valid = self._settle(node_to_ask, nodes is not None, ok)
        return FindReply(nodes) if valid and nodes is not None else None

    async def call_find_entries(self, node_to_ask: Node, key: bytes, after: str) -> FindReply | None:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, reply = await self._call(address, RPC.find_entries, self.source_node.id, key, after)
        parsed = _parse_find_entries(reply, self.router.ksize) if ok else None
        return parsed if self._settle(node_to_ask, parsed is not None, ok) else None

    async def call_store_entry(self, node_to_ask: Node, key: bytes, entry: Entry) -> bool:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, reply = await self._call(address, RPC.store_entry, self.source_node.id, key, entry.to_wire())
        self._settle(node_to_ask, ok and isinstance(reply, bool), ok)
        return ok and reply is True

    def _settle(self, node: Node, valid: bool, answered: bool = True) -> bool:
        """Routing bookkeeping for one call: a silent or garbage-speaking peer leaves the table."""
        if valid:
            self.welcome_if_new(node)
        else:
            if answered:
                self._ignore((node.ip, node.port), "malformed reply")
            self.router.remove_contact(node)
        return valid

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _is_node_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == _ID_BYTES


def _node_id(value: object) -> bytes:
    if not _is_node_id(value):
        raise ValueError("node id or key must be 20 bytes")
    return value  # type: ignore[return-value]


def _unmapped(ip: str) -> str:
    """1.2.3.4 for ::ffff:1.2.3.4: routing tables and replies carry plain IPv4,
    which IPv4-only peers can use too."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _parse_nodes(obj: object, limit: int) -> tuple[Node, ...] | None:
    """Valid (id, ip, port) triples of a reply; None if it is not a list at all."""
    if not isinstance(obj, list):
        return None
    nodes = []
    for item in obj[: limit * 2]:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        node_id, ip, port = item
        if _is_node_id(node_id) and _is_ip(ip) and isinstance(port, int) and not isinstance(port, bool):
            if 0 < port < 65536:
                nodes.append(Node(node_id, ip, port))
    return tuple(nodes)


def _parse_find_entries(obj: object, limit: int) -> FindReply | None:
    if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[1], list) and isinstance(obj[2], bool)):
        return None
    nodes = _parse_nodes(obj[0], limit)
    if nodes is None:
        return None
    entries = [Entry.from_wire(item) for item in obj[1]]
    return FindReply(nodes, tuple(e for e in entries if e is not None), obj[2])


def _is_ip(value: object) -> bool:
    # inet_pton rather than ipaddress: this runs for every node of every reply.
    if not isinstance(value, str):
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
        except (OSError, ValueError):
            continue
        return True
    return False
