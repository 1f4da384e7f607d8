"""An engine that plays a fixed script: for router tests and proxy benchmarks.

It goes through the same admission queue and yields the same `Piece`s as
`LlamaEngine`, so a node running it exercises the real HTTP/SSE path while
its timing is exactly known. Never the default: `--engine scripted` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from mesh.local.admission import Admission, Throughput
from mesh.local.catalog import LocalModel
from mesh.local.engine import EngineStats, GenerationJob, Piece, TokenUsage


class ScriptedEngine:
    def __init__(self, *, model_id: str, tokens: int = 64, token_delay_s: float = 0.0,
                 max_queue: int = 16, n_ctx: int = 2048) -> None:
        self._model = LocalModel(
            id=model_id, path=Path(f"scripted://{model_id}"), architecture="scripted",
            quantization=None, n_ctx=n_ctx, n_ctx_train=None, chat_format="scripted",
            size_bytes=0,
        )
        self._tokens = tokens
        self._delay = token_delay_s
        self._admission = Admission(max_waiting=max_queue)
        self._throughput = Throughput()

    @property
    def model(self) -> LocalModel:
        return self._model

    def stats(self) -> EngineStats:
        t = self._throughput
        return EngineStats(
            queue_depth=self._admission.waiting, active_requests=int(self._admission.busy),
            capacity=self._admission.capacity, tokens_per_second=t.tokens_per_second,
            prompt_tokens_per_second=t.prompt_tokens_per_second,
            prompt_tokens_total=t.prompt_tokens_total,
            completion_tokens_total=t.completion_tokens_total,
            requests_total=t.requests_total, requests_cancelled=t.requests_cancelled,
        )

    async def stream(self, job: GenerationJob) -> AsyncIterator[Piece]:
        await self._admission.acquire()
        limit = job.params.max_tokens or self._tokens
        count = min(limit, self._tokens)
        prompt_tokens = len((job.prompt or "").split()) + sum(
            len(t.content.split()) for t in job.messages or ())
        started = time.perf_counter()
        sent = 0
        try:
            for index in range(count):
                if self._delay:
                    await asyncio.sleep(self._delay)
                sent += 1
                yield Piece(f" tok{index}")
            yield Piece("", finish_reason="length" if count == limit else "stop",
                        usage=TokenUsage(prompt_tokens, count))
        finally:
            elapsed = time.perf_counter() - started
            self._throughput.record(prompt_tokens=prompt_tokens, prompt_seconds=0.0,
                                    completion_tokens=sent, generation_seconds=elapsed,
                                    cancelled=sent < count)
            self._admission.release()

    async def close(self) -> None:
        return None
