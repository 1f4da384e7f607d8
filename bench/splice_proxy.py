"""The "protocol-level splice" reference: how cheap can a Python relay hop get?

A minimal HTTP/1.1 reverse proxy on bare asyncio protocols (uvloop): it reads
a request (head + Content-Length body), writes it unchanged to a pooled
keep-alive upstream connection, and from then on every `data_received` from
the upstream is written straight to the client's transport: the upstream's
own chunked framing passes through untouched (no HTTP decode, no re-encode,
no StreamReader, no task wake-up per chunk). A tiny state machine follows the
chunk sizes only to know where the answer ends, so both connections stay
keep-alive. No routing, no retries, no error handling worth the name: it is a
measuring stick for node A's relay (what aiohttp's per-chunk path costs on
top of the syscalls), not a product.

    python -m bench.splice_proxy --route 9001=http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio


class _Upstream(asyncio.Protocol):
    def __init__(self, pool: list[_Upstream]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: _Client | None = None
        self._head = b""
        self._state = "idle"
        self._left = 0  # bytes left in the current chunk (+2 for its CRLF)
        self._line = b""
        self.alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None and self.client.transport is not None:
            self.client.transport.close()

    def start(self, client: _Client, request: bytes) -> None:
        self.client, self._state, self._head = client, "head", b""
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or client.transport is None:
            return
        client.transport.write(data)  # the whole point: bytes straight through
        if self._state == "head":
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._head[:end].lower()
            data = self._head[end + 4:]
            self._head = b""
            if b"transfer-encoding: chunked" in head:
                self._state, self._line = "size", b""
            else:
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self._state, self._left = "length", length
        self._follow(data)

    def _follow(self, data: bytes) -> None:
        """Track framing to find the end of the answer."""
        while True:
            if self._state == "length":
                self._left -= len(data)
                if self._left <= 0:
                    self._done()
                return
            if self._state == "body":
                if len(data) < self._left:
                    self._left -= len(data)
                    return
                data, self._state = data[self._left:], "size"
            if self._state == "size":
                self._line += data
                end = self._line.find(b"\r\n")
                if end < 0:
                    return
                size = int(self._line[:end].split(b";")[0], 16)
                data, self._line = self._line[end + 2:], b""
                if size == 0:
                    self._state = "trailer"
                else:
                    self._state, self._left = "body", size + 2
                    continue
            if self._state == "trailer":
                self._line += data
                if self._line.startswith(b"\r\n") or b"\r\n\r\n" in self._line:
                    self._line = b""
                    self._done()
                return
            return

    def _done(self) -> None:
        client, self.client, self._state = self.client, None, "idle"
        if self.alive:
            self.pool.append(self)
        if client is not None:
            client.answered()


class _Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int], pool: list[_Upstream]) -> None:
        self.upstream, self.pool = upstream, pool
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._next()

    def _next(self) -> None:
        if self._busy:
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self._buf[:end].split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        total = end + 4 + length
        if len(self._buf) < total:
            return
        request, self._buf = self._buf[:total], self._buf[total:]
        self._busy = True
        asyncio.ensure_future(self._send(request))

    async def _send(self, request: bytes) -> None:
        while self.pool and not self.pool[-1].alive:
            self.pool.pop()
        if self.pool:
            up = self.pool.pop()
        else:
            loop = asyncio.get_running_loop()
            _, up = await loop.create_connection(lambda: _Upstream(self.pool), *self.upstream)
        up.start(self, request)

    def answered(self) -> None:
        self._busy = False
        self._next()


async def main(routes: list[tuple[int, str]]) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for port, url in routes:
        host, up_port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        pool: list[_Upstream] = []
        servers.append(await loop.create_server(
            lambda u=(host, int(up_port)), p=pool: _Client(u, p), "127.0.0.1", port))
    await asyncio.Event().wait()


def _route(text: str) -> tuple[int, str]:
    port, _, url = text.partition("=")
    return int(port), url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", type=_route, action="append", required=True)
    import uvloop

    uvloop.run(main(parser.parse_args().route))
