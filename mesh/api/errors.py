"""The one middleware that turns every failure into an OpenAI-shaped error body."""

from __future__ import annotations

import logging
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mesh.api.context import NODE
from mesh.errors import BadRequest, MeshError, NotFound, PayloadTooLarge

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


def error_response(error: MeshError) -> web.Response:
    return web.Response(
        status=error.status,
        body=error.body().model_dump_json(),
        content_type="application/json",
        headers=error.headers,
    )


def parse_body(model: type[ModelT], raw: bytes) -> ModelT:
    """Validate a JSON request body; every problem becomes a 400 naming the field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise BadRequest(f"the request body is not valid JSON: {first['msg']}") from None
        if first["type"] == "model_type":
            raise BadRequest("the request body must be a JSON object") from None
        param = ".".join(str(p) for p in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{param}: {message}" if param else message, param=param) from None


@web.middleware
async def openai_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MeshError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[NODE].settings.max_body_bytes
        return error_response(PayloadTooLarge(
            f"the request body is larger than this node accepts ({limit} bytes)"))
    except web.HTTPNotFound:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(_MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; use {allowed}"))
    except web.HTTPException:
        raise
    except ConnectionResetError:
        raise  # the client went away; nobody to answer
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(MeshError("internal error; see the node's log"))


class _MethodNotAllowed(MeshError):
    status = 405
    error_type = "invalid_request_error"
