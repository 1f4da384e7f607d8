"""The real engine: llama-cpp-python on its own thread. The only `llama_cpp` importer.

llama.cpp calls block for the whole generation, so they run on a dedicated
one-thread executor and tokens reach the event loop through
`call_soon_threadsafe`. A stopping criterion, called by llama.cpp once per
sampled token, both counts tokens (llama-cpp-python's streams carry no
usage) and checks the cancel flag: a client that goes away stops generation
within one token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import llama_chat_format

from mesh.errors import BadRequest, ContextLengthExceeded
from mesh.local.admission import Admission, Throughput
from mesh.local.catalog import (
    LocalModel, ModelFileError, check_chat_format, check_gguf, describe, pick_chat_format,
)
from mesh.local.engine import (
    EngineStats, GenerationJob, Piece, SamplingParams, TokenUsage,
)

log = logging.getLogger(__name__)

Emit = Callable[[object], None]


def known_chat_formats() -> frozenset[str]:
    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()
    return frozenset(registry._chat_handlers)  # noqa: SLF001 - no public listing exists


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


class _TokenClock:
    """Stopping criterion that counts sampled tokens and honours cancellation."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.sampled = 0
        self.prompt_tokens = 0
        self.first_token_at: float | None = None

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        if self.sampled == 0:
            # At the first call input_ids is exactly the evaluated prompt.
            self.prompt_tokens = len(input_ids)
            self.first_token_at = time.perf_counter()
        self.sampled += 1
        return self.cancel.is_set()


class _ClockedLlama:
    """Wraps `Llama` so a chat handler's inner `create_completion` gets our
    clock as a stopping criterion and our context-length check (the handlers
    pass through only their own criteria)."""

    def __init__(self, llama: llama_cpp.Llama, clock: _TokenClock) -> None:
        self._llama = llama
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, *, prompt: list[int], **kwargs: Any) -> Any:
        n_ctx = self._llama.n_ctx()
        if len(prompt) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(prompt)} tokens; this model's context is {n_ctx} tokens",
                param="messages",
            )
        criteria = list(kwargs.pop("stopping_criteria", None) or [])
        kwargs["stopping_criteria"] = llama_cpp.StoppingCriteriaList([*criteria, self._clock])
        return self._llama.create_completion(prompt=prompt, **kwargs)


class LlamaEngine:
    """One GGUF model, one generation at a time, a bounded FIFO queue in front."""

    def __init__(self, llama: llama_cpp.Llama, model: LocalModel, *, max_queue: int,
                 executor: ThreadPoolExecutor) -> None:
        self._llama = llama
        self._model = model
        self._executor = executor
        self._admission = Admission(max_waiting=max_queue)
        self._throughput = Throughput()
        handlers = llama._chat_handlers  # noqa: SLF001 - where GGUF templates are registered
        self._chat_handler = (
            llama.chat_handler
            or handlers.get(llama.chat_format)
            or llama_chat_format.get_chat_completion_handler(llama.chat_format)
        )

    @classmethod
    async def load(
        cls, path: Path, *, model_name: str | None, chat_format: str | None, n_ctx: int,
        n_batch: int, n_threads: int | None, n_gpu_layers: int, max_queue: int,
    ) -> LlamaEngine:
        """Load a GGUF off the event loop; raise ModelFileError with a one-line reason."""
        check_gguf(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        load = functools.partial(
            _load_llama, path, chat_format=chat_format, n_ctx=n_ctx, n_batch=n_batch,
            n_threads=n_threads, n_gpu_layers=n_gpu_layers,
        )
        try:
            llama, forced_format = await asyncio.get_running_loop().run_in_executor(executor, load)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        model = describe(path, llama.metadata, model_name=model_name, n_ctx=llama.n_ctx(),
                         chat_format=forced_format)
        log.info("loaded %s as %r (%s, %s, n_ctx=%d, chat format %s)", path.name, model.id,
                 model.architecture, model.quantization, model.n_ctx, model.chat_format)
        return cls(llama, model, max_queue=max_queue, executor=executor)

    @property
    def model(self) -> LocalModel:
        return self._model

    def stats(self) -> EngineStats:
        t = self._throughput
        return EngineStats(
            queue_depth=self._admission.waiting,
            active_requests=int(self._admission.busy),
            capacity=self._admission.capacity,
            tokens_per_second=t.tokens_per_second,
            prompt_tokens_per_second=t.prompt_tokens_per_second,
            prompt_tokens_total=t.prompt_tokens_total,
            completion_tokens_total=t.completion_tokens_total,
            requests_total=t.requests_total,
            requests_cancelled=t.requests_cancelled,
        )

    async def stream(self, job: GenerationJob) -> AsyncIterator[Piece]:
        await self._admission.acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def on_loop(fn: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(fn)

        worker = loop.run_in_executor(
            self._executor, self._generate, job, emit, on_loop, cancel)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Piece)
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            cancel.set()
            try:
                # The context is single-use: wait until llama.cpp has let go of it.
                await asyncio.shield(worker)
            except asyncio.CancelledError:
                pass
            except Exception:  # already delivered to the consumer, or nobody is listening
                pass
            self._admission.release()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._llama.close)
        self._executor.shutdown(wait=False)

    # -- worker thread ----------------------------------------------------

    def _generate(self, job: GenerationJob, emit: Emit, on_loop: Callable[[Callable[[], None]], None],
                  cancel: threading.Event) -> None:
        clock = _TokenClock(cancel)
        started = time.perf_counter()
        finish: str | None = None
        try:
            for text, reason in self._chunks(job, clock):
                if text:
                    emit(Piece(text))
                finish = reason or finish
                if cancel.is_set():
                    break
        except Exception as exc:  # delivered to the request that asked
            if not isinstance(exc, BadRequest):
                log.exception("generation failed")
            emit(exc)
            return
        finally:
            on_loop(self._recorder(clock, started, finish, cancel.is_set()))
        # The clock also sees the token that ended generation (EOS, or one past
        # max_tokens), which is not part of the answer.
        limit = job.params.max_tokens
        completion = min(clock.sampled, limit) if finish == "length" and limit \
            else max(clock.sampled - 1, 0)
        emit(Piece("", finish_reason="length" if finish == "length" else "stop",
                   usage=TokenUsage(clock.prompt_tokens, completion)))

    def _chunks(self, job: GenerationJob, clock: _TokenClock) -> Iterator[tuple[str, str | None]]:
        params = job.params
        sampling = _sampling_kwargs(params)
        llama = _ClockedLlama(self._llama, clock)
        if job.messages is not None:
            chunks = self._chat_handler(
                llama=llama,
                messages=_messages_for(job, self._model.chat_format),
                response_format={"type": "json_object"} if params.json_mode else None,
                **sampling,
            )
            key = "delta"
        else:
            text = job.prompt or ""
            tokens = (self._llama.tokenize(text.encode(), add_bos=True, special=True)
                      if text else [self._llama.token_bos()])
            chunks = llama.create_completion(prompt=tokens, **sampling)
            key = None
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice["delta"].get("content") if key else choice.get("text")
                yield text or "", choice.get("finish_reason")
        finally:
            chunks.close()

    def _recorder(self, clock: _TokenClock, started: float, finish: str | None,
                  cancelled: bool) -> Callable[[], None]:
        """The stats update for one finished job; counters are only touched on the loop."""
        ended = time.perf_counter()
        first = clock.first_token_at or ended
        return functools.partial(
            self._throughput.record,
            prompt_tokens=clock.prompt_tokens, prompt_seconds=first - started,
            completion_tokens=clock.sampled, generation_seconds=ended - first,
            cancelled=cancelled,
        )


def _sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "stream": True,
    }


def _messages_for(job: GenerationJob, chat_format: str) -> list[dict[str, str]]:
    turns = list(job.messages or ())
    if chat_format == "gemma":
        # Gemma's format has no system role (llama-cpp-python drops it); fold it
        # into the first user turn as Google's own template does.
        system = "\n\n".join(t.content for t in turns if t.role == "system")
        turns = [t for t in turns if t.role != "system"]
        if system and turns and turns[0].role == "user":
            turns[0] = type(turns[0])("user", f"{system}\n\n{turns[0].content}")
    return [{"role": t.role, "content": t.content} for t in turns]


def _load_llama(path: Path, *, chat_format: str | None, n_ctx: int, n_batch: int,
                n_threads: int | None, n_gpu_layers: int) -> tuple[llama_cpp.Llama, str | None]:
    check_chat_format(chat_format, known_chat_formats())
    try:
        # llama-cpp-python turns flash attention OFF unless asked (llama.cpp's own
        # default, and llama-server's, is "auto": on wherever the backend has it) and
        # keeps a full-size sliding-window cache (llama-server: off). Measured on
        # 2 cores, Gemma 3 270M: +9% generation tokens/s with both like llama-server
        # (bench/RESULTS.md, engine efficiency).
        llama = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx),
            n_threads=n_threads, n_gpu_layers=n_gpu_layers, chat_format=chat_format,
            flash_attn=True, swa_full=False, verbose=False,
        )
    except ValueError as exc:
        raise ModelFileError(f"llama.cpp could not load {path}: {exc}") from exc
    # Without a GGUF template llama-cpp-python falls back to llama-2, which is
    # wrong for most models; pick by architecture instead.
    forced = pick_chat_format(llama.metadata, chat_format)
    if forced is not None:
        llama.chat_format = forced
    return llama, forced
