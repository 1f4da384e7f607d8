"""The seam between the node and whatever generates tokens.

`Engine` is what the API and the router see; `LlamaEngine`
(mesh/local/llama_engine.py) is the real one, `ScriptedEngine`
(mesh/local/scripted.py) plays fixed tokens for router tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from mesh.local.catalog import LocalModel

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    json_mode: bool = False


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """A chat (`messages`) or a plain completion (`prompt`); exactly one is set."""

    params: SamplingParams
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of generated text; the last piece of a generation carries
    `finish_reason` and `usage` (its text may be empty)."""

    text: str
    finish_reason: FinishReason | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class EngineStats:
    queue_depth: int
    active_requests: int
    capacity: int
    tokens_per_second: float
    prompt_tokens_per_second: float
    prompt_tokens_total: int
    completion_tokens_total: int
    requests_total: int
    requests_cancelled: int


class Engine(Protocol):
    @property
    def model(self) -> LocalModel: ...

    def stats(self) -> EngineStats: ...

    def stream(self, job: GenerationJob) -> AsyncIterator[Piece]:
        """Generate for `job`. Raises `mesh.errors.Overloaded` at the first
        `__anext__` when the queue is full; closing the iterator early (client
        gone) stops generation within about one token."""
        ...

    async def close(self) -> None: ...
