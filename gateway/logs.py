"""Logging: structlog, configured once, JSON lines, request context from contextvars.

:class:`RequestIdMiddleware` is a pure ASGI middleware (not ``BaseHTTPMiddleware``, which breaks
contextvars): it gives every request an id, binds it for every log line the request causes, and
returns it in ``x-request-id``.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr; safe to call more than once."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _json_line(event: dict[str, Any], **_: Any) -> str:
    """One log line's JSON, by msgspec (several times quicker than ``json.dumps``); a value
    it cannot encode is written as its ``repr``."""
    return msgspec.json.encode(event, enc_hook=repr).decode()


class RequestIdMiddleware:
    """Bind ``request_id`` for the request's logs and send it back as ``x-request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or f"req_{secrets.token_hex(16)}"
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _INCOMING_ID.match(text) else None
    return None
