"""A bare rpcudp client/peer written from the wire format, to poke nodes from outside."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import umsgpack


class RawPeer(asyncio.DatagramProtocol):
    """Sends requests and records every reply datagram; `answer` decides how to reply to requests."""

    def __init__(self, answer: Callable[[str, list[object]], bytes | None] | None = None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answer = answer
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.requests_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        kind, msg_id = data[:1], data[1:21]
        if kind == b"\x01" and msg_id in self.waiting:
            self.waiting.pop(msg_id).set_result(data)
        elif kind == b"\x00" and self.answer is not None:
            self.requests_seen += 1
            try:
                name, args = umsgpack.unpackb(data[21:])
            except Exception:
                return
            body = self.answer(name, args)
            if body is not None and self.transport is not None:
                self.transport.sendto(b"\x01" + msg_id + body, addr)

    def send_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def request(self, addr: tuple[str, int], name: str, *args: object, timeout: float = 2.0) -> bytes:
        """Send one request; return the whole reply datagram (header included)."""
        msg_id = os.urandom(20)
        future = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        self.send_raw(b"\x00" + msg_id + umsgpack.packb([name, list(args)]), addr)
        return await asyncio.wait_for(future, timeout)


async def open_peer(answer: Callable[[str, list[object]], bytes | None] | None = None) -> tuple[RawPeer, int]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(lambda: RawPeer(answer), local_addr=("127.0.0.1", 0))
    return peer, transport.get_extra_info("sockname")[1]
