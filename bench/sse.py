"""A low-overhead streaming client: raw asyncio sockets, HTTP/1.1 keep-alive.

Each SSE event is stamped with `time.perf_counter()` taken in
`data_received`, i.e. when its bytes reached this process, so two events that
arrive in one read get the same stamp: exactly what "did the pacing survive
the proxy" asks. No SSE library, no JSON parsing per event: content events are
recognised by bytes (`"content":"x` or `"text":"x`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')
_CONTENT_KEYS = (b'"content":"', b'"text":"')


def is_content(event: bytes) -> bool:
    for key in _CONTENT_KEYS:
        at = event.find(key)
        if at >= 0 and event[at + len(key):at + len(key) + 1] not in (b'"', b""):
            return True
    return False


@dataclass(slots=True)
class StreamResult:
    started: float  # perf_counter when the request was written
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    content_times: list[float] = field(default_factory=list)
    events: int = 0
    done: bool = False  # saw `data: [DONE]`
    error: str | None = None
    completion_tokens: int | None = None
    ended: float = 0.0
    body: bytes = b""  # non-SSE bodies (errors), first 2 KB

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and (self.done or not self.events)

    @property
    def ttft(self) -> float | None:
        return self.content_times[0] - self.started if self.content_times else None

    @property
    def started_streaming(self) -> bool:
        return self.status == 200 and self.events > 0

    def gaps(self) -> list[float]:
        t = self.content_times
        return [b - a for a, b in zip(t, t[1:])]


class _Http(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._result: StreamResult | None = None
        self._done: asyncio.Future[StreamResult] | None = None
        self._buf = b""
        self._state = "idle"
        self._chunk_left = 0
        self._length_left = 0
        self._chunked = False
        self._sse = b""
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        if self._done is not None and not self._done.done():
            assert self._result is not None
            self._result.error = self._result.error or f"connection lost: {exc!r}"
            self._finish()
        if not self.closed.done():
            self.closed.set_result(None)

    def request(self, raw: bytes, started: float) -> asyncio.Future[StreamResult]:
        assert self.transport is not None and self._state == "idle"
        self._result = StreamResult(started=started)
        self._done = asyncio.get_running_loop().create_future()
        self._buf, self._sse, self._state = b"", b"", "head"
        self.transport.write(raw)
        return self._done

    def _finish(self) -> None:
        assert self._result is not None and self._done is not None
        self._result.ended = time.perf_counter()
        self._state = "idle"
        if not self._done.done():
            self._done.set_result(self._result)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._state == "idle":
            return
        self._buf += data
        while self._buf and self._state != "idle":
            if not self._step(now):
                break

    def _step(self, now: float) -> bool:
        """Consume what can be consumed from _buf; False when more bytes are needed."""
        r = self._result
        assert r is not None
        if self._state == "head":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self._buf = self._buf[:end].decode("latin-1"), self._buf[end + 4:]
            lines = head.split("\r\n")
            r.status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                r.headers[name.strip().lower()] = value.strip()
            self._chunked = r.headers.get("transfer-encoding", "").lower() == "chunked"
            self.keep_alive = r.headers.get("connection", "").lower() != "close"
            if self._chunked:
                self._state = "size"
            else:
                self._length_left = int(r.headers.get("content-length", "0"))
                self._state = "length"
                if self._length_left == 0:
                    self._finish()
            return True
        if self._state == "size":
            end = self._buf.find(b"\r\n")
            if end < 0:
                return False
            size = int(self._buf[:end].split(b";")[0], 16)
            self._buf = self._buf[end + 2:]
            if size == 0:
                self._state = "trailer"
            else:
                self._chunk_left, self._state = size, "chunk"
            return True
        if self._state == "chunk":
            take = self._buf[:self._chunk_left]
            self._buf = self._buf[len(take):]
            self._chunk_left -= len(take)
            self._body(take, now)
            if self._chunk_left == 0:
                self._state = "chunk-end"
            return bool(self._buf)
        if self._state == "chunk-end":
            if len(self._buf) < 2:
                return False
            self._buf = self._buf[2:]
            self._state = "size"
            return True
        if self._state == "trailer":
            end = self._buf.find(b"\r\n")
            if end < 0:
                return False
            line, self._buf = self._buf[:end], self._buf[end + 2:]
            if not line:
                self._finish()
            return True
        if self._state == "length":
            take = self._buf[:self._length_left]
            self._buf = self._buf[len(take):]
            self._length_left -= len(take)
            self._body(take, now)
            if self._length_left == 0:
                self._finish()
            return bool(self._buf)
        return False

    def _body(self, data: bytes, now: float) -> None:
        r = self._result
        assert r is not None
        if "text/event-stream" not in r.headers.get("content-type", ""):
            if len(r.body) < 2048:
                r.body += data[:2048 - len(r.body)]
            return
        self._sse += data
        while True:
            end = self._sse.find(b"\n\n")
            if end < 0:
                return
            event, self._sse = self._sse[:end], self._sse[end + 2:]
            r.events += 1
            if event.startswith(b"data: [DONE]"):
                r.done = True
            elif b'"error"' in event[:40]:
                r.error = event[:300].decode(errors="replace")
            else:
                if is_content(event):
                    r.content_times.append(now)
                usage = _USAGE.search(event)
                if usage:
                    r.completion_tokens = int(usage.group(1))


def request_bytes(host: str, port: int, path: str, body: bytes,
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: keep-alive",
             "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._proto: _Http | None = None

    async def _ensure(self) -> _Http:
        if self._proto is None or not self._proto.keep_alive or self._proto.transport is None \
                or self._proto.transport.is_closing():
            self.close()
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_Http, self.host, self.port)
            self._proto = proto
        return self._proto

    async def send(self, raw: bytes, *, timeout: float) -> StreamResult:
        started = time.perf_counter()
        try:
            proto = await asyncio.wait_for(self._ensure(), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            return StreamResult(started=started, error=f"connect: {exc!r}", ended=time.perf_counter())
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.shield(proto.request(raw, started)), timeout)
        except asyncio.TimeoutError:
            self.close()
            return StreamResult(started=started, error="timeout", ended=time.perf_counter())

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


@dataclass
class LoadResult:
    results: list[StreamResult]
    wall_s: float
    started: float
    ended: float


async def run_load(host: str, port: int, *, path: str, body: bytes | Callable[[int], bytes],
                   concurrency: int, streams: int, deadline_s: float,
                   headers: dict[str, str] | None = None,
                   request_timeout_s: float = 60.0) -> LoadResult:
    """`concurrency` workers, each on its own keep-alive connection, send
    requests back to back until `streams` have been sent or `deadline_s` passed."""
    sent = 0
    results: list[StreamResult] = []
    start = time.perf_counter()
    stop_at = start + deadline_s

    async def worker() -> None:
        nonlocal sent
        conn = Connection(host, port)
        try:
            while sent < streams and time.perf_counter() < stop_at:
                index = sent
                sent += 1
                payload = body(index) if callable(body) else body
                raw = request_bytes(host, port, path, payload, headers)
                left = max(stop_at - time.perf_counter(), 0.5)
                results.append(await conn.send(raw, timeout=min(request_timeout_s, left + 5)))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    end = time.perf_counter()
    return LoadResult(results=results, wall_s=end - start, started=start, ended=end)


def summarize(load: LoadResult, *, gap_threshold_s: float = 0.001) -> dict[str, object]:
    from bench.stats import percentile

    ok = [r for r in load.results if r.ok]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    gaps = [g for r in ok for g in r.gaps()]
    chunks = sum(len(r.content_times) for r in ok)
    per_stream = [len(r.content_times) for r in ok]
    # Streaming rate of one stream, first to last content chunk.
    rates = [(len(r.content_times) - 1) / (r.content_times[-1] - r.content_times[0])
             for r in ok if len(r.content_times) > 1 and r.content_times[-1] > r.content_times[0]]
    return {
        "streams": len(load.results),
        "ok": len(ok),
        "failed": len(load.results) - len(ok),
        "failures": _failure_kinds(load.results),
        "wall_s": load.wall_s,
        "chunks": chunks,
        "chunks_per_stream": percentile(per_stream, 50),
        "chunks_per_s": chunks / load.wall_s if load.wall_s > 0 else None,
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        "ttft_p99_ms": _ms(percentile(ttfts, 99)),
        "ttft_ms": [round(t * 1000, 3) for t in ttfts],
        "gap_p50_ms": _ms(percentile(gaps, 50)),
        "gaps_under_1ms": (sum(g < gap_threshold_s for g in gaps) / len(gaps)) if gaps else None,
        "stream_rate_p50": percentile(rates, 50),
    }


def _failure_kinds(results: Sequence[StreamResult]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in results:
        if r.ok:
            continue
        key = (f"status {r.status}" if r.status not in (0, 200) else
               "mid-stream" if r.started_streaming else (r.error or "incomplete").split(":")[0])
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000
