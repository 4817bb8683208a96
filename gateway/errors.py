"""Every error leaves the gateway as the OpenAI body ``{"error": {message, type, param, code}}``.

The errors a client causes are this module's branch of the one tree rooted in
:mod:`backends.errors`:

    BooagentError                       (backends.errors)
    └── ClientError                     the caller's fault; never retried
        ├── InvalidRequest              400, names the offending ``param``
        ├── AuthenticationFailed        401
        ├── ModelNotFound               404
        ├── RouteNotFound               404, no such endpoint
        ├── MethodNotAllowed            405
        ├── BodyTooLarge                413
        ├── RateLimited                 429, over a key's requests (or requests at once) per
        │   │                           minute; carries ``retry_after`` (gateway.limits)
        │   └── TokensLimited           429, over a key's tokens per minute
        └── HttpsRequired               400, plain HTTP sent to the HTTPS port (gateway.tls)

One function renders any error of the tree; the Litestar handlers below route the framework's
own exceptions (unknown path, wrong method, body too large) and anything unexpected through it,
so a client never sees another shape.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import Send

from backends.errors import AllNodesFailed, BooagentError

_log = structlog.get_logger("booagent.errors")


class ClientError(BooagentError):
    """The request is wrong; retrying it unchanged cannot help."""

    status_code = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    """A field is missing, malformed or out of range; ``param`` names it."""

    code = "invalid_request"


class AuthenticationFailed(ClientError):
    """No or wrong API key."""

    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ClientError):
    """The requested model is neither the virtual model nor a member."""

    status_code = 404
    code = "model_not_found"


class BodyTooLarge(ClientError):
    """The request body exceeds the configured limit."""

    status_code = 413
    code = "request_too_large"


class RouteNotFound(ClientError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status_code = 405
    code = "method_not_allowed"


class HttpsRequired(ClientError):
    """A plain-HTTP request reached the port that speaks HTTPS; the message names the URL."""

    code = "https_required"


class RateLimited(ClientError):
    """The client is over one of its rates; ``retry_after`` says when it will not be."""

    status_code = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokensLimited(RateLimited):
    """The client is over its tokens per minute."""

    type = "tokens"


def error_body(exc: BooagentError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def error_headers(exc: BooagentError) -> dict[str, str]:
    """``Retry-After`` when waiting helps; ``x-should-retry: false`` when we already did."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, AllNodesFailed):
        headers["x-should-retry"] = "false"
    return headers


async def send_error(send: Send, exc: BooagentError) -> None:
    """The error as a whole HTTP response, sent on a bare ASGI ``send`` (for the gateway's
    own ASGI code, which answers outside Litestar's exception handlers)."""
    body = msgspec.json.encode(error_body(exc))
    headers = [(k.encode(), v.encode()) for k, v in error_headers(exc).items()]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_response(exc: BooagentError) -> Response[Any]:
    return Response(error_body(exc), status_code=exc.status_code, headers=error_headers(exc))


def handle_booagent_error(_: Request[Any, Any, Any], exc: BooagentError) -> Response[Any]:
    return error_response(exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own errors, in OpenAI shape, keeping their headers (``Allow`` on a 405)."""
    response = _framework_error(request, exc)
    response.headers.update(exc.headers or {})
    return response


def _framework_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 404:
        return error_response(RouteNotFound(f"no such endpoint: {exc.detail}"))
    if exc.status_code == 405:
        return error_response(MethodNotAllowed("method not allowed on this endpoint"))
    if exc.status_code == 413:
        return error_response(BodyTooLarge("the request body is larger than the limit"))
    if exc.status_code < 500:
        return error_response(ClientError(str(exc.detail), status_code=exc.status_code))
    return handle_unexpected(_, exc)


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, tell the client only that it happened."""
    _log.exception("unexpected_error", error_type=type(exc).__name__)
    return error_response(BooagentError("internal error in the gateway; see its log"))


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    BooagentError: handle_booagent_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
