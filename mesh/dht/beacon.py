"""Zero-config LAN discovery: find a first DHT peer without `--bootstrap-nodes`.

Each node broadcasts a small UDP datagram, `{"app": "llamamesh", "v": 1,
"id": <node id>, "dht": <DHT port>}`, on the IPv4 broadcast address of every
interface the operator allows (every non-loopback interface by default),
at start and then every `interval_s`. A node that hears a peer joins the DHT
through the datagram's source address (never an address the datagram
claims) and answers once with a unicast beacon so the newcomer does not
wait for the next round. After the first contact Kademlia does the rest;
the beacon only ever hands over a first peer.

Datagrams are accepted only from the subnets of allowed interfaces, only
if small and well-formed; everything else is ignored silently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

DEFAULT_PORT = 51900
MAX_DATAGRAM = 512
_ANSWER_EVERY_S = 10.0  # at most one unicast answer per peer in this window

OnPeer = Callable[[str, int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class LanInterface:
    name: str
    network: ipaddress.IPv4Network
    broadcast: str


def lan_interfaces(allowed: Sequence[str] = ()) -> list[LanInterface]:
    """IPv4 interfaces that are up, not loopback, and (if given) in `allowed`."""
    stats = psutil.net_if_stats()
    found = []
    for name, addresses in psutil.net_if_addrs().items():
        if allowed and name not in allowed:
            continue
        if name in stats and not stats[name].isup:
            continue
        for address in addresses:
            if address.family != socket.AF_INET or not address.netmask:
                continue
            network = ipaddress.IPv4Network(f"{address.address}/{address.netmask}", strict=False)
            if network.network_address.is_loopback or network.prefixlen >= 31:
                continue
            found.append(LanInterface(name, network, str(network.broadcast_address)))
    return found


class _BeaconProtocol(asyncio.DatagramProtocol):
    def __init__(self, beacon: LanBeacon) -> None:
        self._beacon = beacon

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._beacon.heard(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("beacon socket error: %s", exc)


class LanBeacon:
    def __init__(self, *, node_id: str, dht_port: int, on_peer: OnPeer,
                 interfaces: Sequence[str] = (), port: int = DEFAULT_PORT,
                 interval_s: float = 5.0) -> None:
        self._node_id = node_id
        self._dht_port = dht_port
        self._on_peer = on_peer
        self._allowed = tuple(interfaces)
        self._port = port
        self._interval = interval_s
        self._transport: asyncio.DatagramTransport | None = None
        self._interfaces: list[LanInterface] = []
        self._answered: dict[str, float] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.peers_found = 0

    async def start(self) -> None:
        self._interfaces = lan_interfaces(self._allowed)
        if not self._interfaces:
            log.info("LAN discovery: no usable interface%s; beacon off",
                     f" among {', '.join(self._allowed)}" if self._allowed else "")
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):  # several nodes on one host share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("0.0.0.0", self._port))
        except OSError as exc:
            sock.close()
            log.warning("LAN discovery off: cannot bind UDP %d (%s)", self._port, exc.strerror)
            return
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _BeaconProtocol(self), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        log.info("LAN discovery on %s (UDP %d)",
                 ", ".join(f"{i.name} {i.network}" for i in self._interfaces), self._port)
        self._loop_task = asyncio.create_task(self._announce_loop(), name="lan-beacon")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _message(self, *, answer: bool) -> bytes:
        body = {"app": "llamamesh", "v": 1, "id": self._node_id, "dht": self._dht_port}
        if answer:
            body["answer"] = True
        return json.dumps(body, separators=(",", ":")).encode()

    async def _announce_loop(self) -> None:
        while True:
            for interface in self._interfaces:
                self._send(self._message(answer=False), interface.broadcast)
            await asyncio.sleep(self._interval)

    def _send(self, data: bytes, host: str) -> None:
        if self._transport is not None:
            try:
                self._transport.sendto(data, (host, self._port))
            except OSError as exc:
                log.debug("beacon to %s failed: %s", host, exc)

    def heard(self, data: bytes, addr: tuple[str, int]) -> None:
        source = addr[0]
        if len(data) > MAX_DATAGRAM or not self._allowed_source(source):
            return
        try:
            body = json.loads(data)
            node_id, dht_port = body["id"], body["dht"]
            valid = (body.get("app") == "llamamesh" and isinstance(node_id, str)
                     and isinstance(dht_port, int) and 0 < dht_port < 65536)
        except (ValueError, KeyError, TypeError):
            return
        if not valid or node_id == self._node_id:
            return
        now = time.monotonic()
        if not body.get("answer") and now - self._answered.get(node_id, 0.0) > _ANSWER_EVERY_S:
            self._answered[node_id] = now
            self._send(self._message(answer=True), source)
        task = asyncio.ensure_future(self._join(source, dht_port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join(self, host: str, port: int) -> None:
        try:
            if await self._on_peer(host, port):
                self.peers_found += 1
        except Exception:  # a failed join is retried at the next beacon
            log.debug("joining %s:%d from a beacon failed", host, port, exc_info=True)

    def _allowed_source(self, host: str) -> bool:
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return any(address in interface.network for interface in self._interfaces)
