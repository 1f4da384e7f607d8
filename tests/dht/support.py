"""Shared pieces of the DHT tests: a record builder and a polling wait."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from mesh.dht.records import ModelInfo, NodeLoad, NodeRecord


def make_record(node_id: str, *, port: int = 8000, models: tuple[str, ...] = ("m",), dht_port: int = 8001) -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        url=f"http://127.0.0.1:{port}",
        dht_host="127.0.0.1",
        dht_port=dht_port,
        models=tuple(ModelInfo(id=m, n_ctx=4096, quantization="Q4_K_M", architecture="llama") for m in models),
        load=NodeLoad(queue_depth=1, active_requests=2, capacity=4, tokens_per_second=41.37, prompt_tokens_per_second=512.5),
        uptime_s=12.5,
        version="0.1.0",
        expires_at=0.0,
    )


async def eventually(
    cond: Callable[[], object | Awaitable[object]], *, timeout: float = 5.0, interval: float = 0.05
) -> float:
    """Poll cond until truthy; return the seconds it took. Fails the test on timeout."""
    start = time.monotonic()
    while True:
        result = cond()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s: {getattr(cond, '__name__', cond)}")
        await asyncio.sleep(interval)


async def consistently(
    cond: Callable[[], object | Awaitable[object]], *, duration: float, interval: float = 0.1
) -> None:
    """Poll cond for duration seconds; fail the test the first time it is falsy."""
    start = time.monotonic()
    while time.monotonic() - start < duration:
        result = cond()
        if inspect.isawaitable(result):
            result = await result
        assert result, f"condition broke after {time.monotonic() - start:.2f} s"
        await asyncio.sleep(interval)
