"""Every error leaves the gateway as the OpenAI body ``{"error": {message, type, param, code}}``.

One function renders :mod:`backends.errors` exceptions; the Litestar handlers below route the
framework's own exceptions (unknown path, wrong method, body too large) and anything unexpected
through it, so a client never sees another shape.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from backends.errors import (
    AllNodesFailed,
    BodyTooLarge,
    BooagentError,
    ClientError,
)

_log = structlog.get_logger("booagent.errors")


class RouteNotFound(ClientError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status_code = 405
    code = "method_not_allowed"


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
        error = ClientError(str(exc.detail))
        error.status_code = exc.status_code  # type: ignore[misc]
        return error_response(error)
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
