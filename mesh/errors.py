"""The one error tree of LlamaMesh, and how each error looks on the wire.

    MeshError                       500 server_error (a real bug)
    ├── BadRequest                  400 invalid_request_error
    │   └── ContextLengthExceeded   400 code=context_length_exceeded
    ├── NotFound                    404 invalid_request_error
    │   └── ModelNotFound           404 code=model_not_found
    ├── PayloadTooLarge             413 invalid_request_error
    ├── Overloaded                  503 code=queue_full (Retry-After)
    ├── NoRoute                     503 code=no_provider_available (Retry-After)
    └── UpstreamFailed              502 code=upstream_error

Handlers raise these; one middleware renders them as OpenAI's
`{"error": {"message", "type", "param", "code"}}`. Code never classifies an
error by its message text.
"""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel, frozen=True):
    error: ErrorDetail


class MeshError(Exception):
    status = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorDetail(
                message=self.message, type=self.error_type, param=self.param, code=self.code
            )
        )


class BadRequest(MeshError):
    status = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    code = "context_length_exceeded"


class NotFound(MeshError):
    status = 404
    error_type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(MeshError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class _RetryLater(MeshError):
    status = 503
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Overloaded(_RetryLater):
    code = "queue_full"


class NoRoute(_RetryLater):
    code = "no_provider_available"


class UpstreamFailed(MeshError):
    status = 502
    error_type = "server_error"
    code = "upstream_error"


class StartupError(Exception):
    """The node cannot start as configured; the message is one line for the operator
    and the CLI exits with status 2."""
