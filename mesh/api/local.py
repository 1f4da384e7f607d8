"""Serve a request from this node's own engine: JSON or an OpenAI SSE stream.

Headers go out only once the engine has admitted the request and produced
its first piece, so a full queue or a too-long prompt is still a clean
HTTP error (and a proxying peer can still try elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from mesh.errors import MeshError
from mesh.local.engine import ChatTurn, Engine, GenerationJob, Piece, SamplingParams, TokenUsage
from mesh.wire import (
    SSE_DONE, AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion,
    ChatCompletionChunk, ChatCompletionRequest, ChatDelta, Completion, CompletionRequest,
    TextChoice, Usage, error_event, new_id, now, sse_event,
)

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

OpenAIRequest = ChatCompletionRequest | CompletionRequest


def job_for(body: OpenAIRequest) -> GenerationJob:
    params = SamplingParams(
        max_tokens=body.token_limit,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=tuple(body.stop or ()),
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        json_mode=isinstance(body, ChatCompletionRequest)
        and body.response_format is not None
        and body.response_format.type == "json_object",
    )
    if isinstance(body, ChatCompletionRequest):
        turns = tuple(
            ChatTurn("system" if m.role == "developer" else m.role, m.text())
            for m in body.messages
        )
        return GenerationJob(params=params, messages=turns)
    assert isinstance(body.prompt, str)
    return GenerationJob(params=params, prompt=body.prompt)


async def respond_local(
    request: web.Request, engine: Engine, body: OpenAIRequest, *, headers: dict[str, str]
) -> web.StreamResponse:
    async with contextlib.aclosing(engine.stream(job_for(body))) as pieces:
        first = await anext(pieces)  # Overloaded / ContextLengthExceeded surface here
        if not body.stream:
            return await _whole(body, first, pieces, headers)
        return await _streamed(request, body, first, pieces, headers)


async def _whole(body: OpenAIRequest, first: Piece, pieces: AsyncIterator[Piece],
                 headers: dict[str, str]) -> web.Response:
    texts = [first.text]
    last = first
    while last.finish_reason is None:
        last = await anext(pieces)
        texts.append(last.text)
    text = "".join(texts)
    usage = _usage(last.usage)
    answer: ChatCompletion | Completion
    if isinstance(body, ChatCompletionRequest):
        answer = ChatCompletion(
            id=new_id("chatcmpl"), created=now(), model=body.model, usage=usage,
            choices=[ChatChoice(message=AssistantMessage(content=text),
                                finish_reason=last.finish_reason)],
        )
    else:
        answer = Completion(
            id=new_id("cmpl"), created=now(), model=body.model, usage=usage,
            choices=[TextChoice(text=text, finish_reason=last.finish_reason)],
        )
    return web.Response(body=answer.model_dump_json(), content_type="application/json",
                        headers=headers)


async def _streamed(request: web.Request, body: OpenAIRequest, first: Piece,
                    pieces: AsyncIterator[Piece], headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS | headers)
    await response.prepare(request)
    frame = _ChatFrames(body.model) if isinstance(body, ChatCompletionRequest) \
        else _TextFrames(body.model)
    if isinstance(frame, _ChatFrames):
        await response.write(frame.opening())
    piece = first
    try:
        while True:
            if piece.text or piece.finish_reason:
                await response.write(frame.chunk(piece))
            if piece.finish_reason is not None:
                break
            piece = await anext(pieces)
    except MeshError as exc:
        # Headers are gone: the only honest thing left is an error event, no [DONE].
        log.warning("generation failed mid-stream: %s", exc.message)
        await response.write(error_event(exc.message, code=exc.code or "generation_failed"))
        return response
    except Exception:
        log.exception("generation failed mid-stream")
        await response.write(error_event("generation failed on the serving node",
                                         code="generation_failed"))
        return response
    if body.include_usage:
        await response.write(frame.usage(_usage(piece.usage)))
    await response.write(SSE_DONE)
    return response


def _usage(usage: TokenUsage | None) -> Usage:
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


class _ChatFrames:
    def __init__(self, model: str) -> None:
        self._id = new_id("chatcmpl")
        self._created = now()
        self._model = model

    def _event(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> bytes:
        return sse_event(ChatCompletionChunk(id=self._id, created=self._created,
                                             model=self._model, choices=choices, usage=usage))

    def opening(self) -> bytes:
        return self._event([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])

    def chunk(self, piece: Piece) -> bytes:
        delta = ChatDelta(content=piece.text) if piece.text else ChatDelta()
        return self._event([ChatChunkChoice(delta=delta, finish_reason=piece.finish_reason)])

    def usage(self, usage: Usage) -> bytes:
        return self._event([], usage)


class _TextFrames:
    def __init__(self, model: str) -> None:
        self._id = new_id("cmpl")
        self._created = now()
        self._model = model

    def chunk(self, piece: Piece) -> bytes:
        return sse_event(Completion(
            id=self._id, created=self._created, model=self._model,
            choices=[TextChoice(text=piece.text, finish_reason=piece.finish_reason)],
        ))

    def usage(self, usage: Usage) -> bytes:
        return sse_event(Completion(id=self._id, created=self._created, model=self._model,
                                    choices=[], usage=usage))
