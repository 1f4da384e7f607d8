"""One generation at a time per model, the rest in a bounded FIFO queue.

llama.cpp's context decodes one sequence at a time here, so a second request
must wait; a queue that grows without bound only turns overload into
time-outs, so past `max_waiting` the node answers 503 at once and the router
(or the client) goes elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from mesh.errors import Overloaded


class Admission:
    def __init__(self, *, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def capacity(self) -> int:
        return 1 + self._max_waiting

    async def acquire(self) -> None:
        if not self._busy and not self._waiters:
            self._busy = True
            return
        if self.waiting >= self._max_waiting:
            raise Overloaded(
                f"the node's queue is full ({self._max_waiting} waiting); retry shortly",
                retry_after_s=1,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # we were handed the slot as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self._busy = False


@dataclass(slots=True)
class Throughput:
    """Recent speeds as exponential moving averages, and running totals."""

    alpha: float = 0.3
    tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    prompt_tokens_total: int = 0
    completion_tokens_total: int = 0
    requests_total: int = 0
    requests_cancelled: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def record(
        self, *, prompt_tokens: int, prompt_seconds: float,
        completion_tokens: int, generation_seconds: float, cancelled: bool,
    ) -> None:
        self.requests_total += 1
        self.requests_cancelled += cancelled
        self.prompt_tokens_total += prompt_tokens
        self.completion_tokens_total += completion_tokens
        if prompt_tokens and prompt_seconds > 0:
            self.prompt_tokens_per_second = self._ema(
                self.prompt_tokens_per_second, prompt_tokens / prompt_seconds)
        # A rate from one or two tokens is mostly timer noise.
        if completion_tokens > 2 and generation_seconds > 0:
            self.tokens_per_second = self._ema(
                self.tokens_per_second, (completion_tokens - 1) / generation_seconds)

    def _ema(self, old: float, sample: float) -> float:
        return sample if old == 0.0 else old + self.alpha * (sample - old)
