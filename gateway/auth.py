"""API keys: when the config lists keys, every route but the probes demands one.

:class:`RequireApiKey` is a pure ASGI middleware that the app puts on the protected routes
(``gateway.app.create_app``): declared once, not called by hand in each handler, and cheaper
than a Litestar guard (which copies the route handler on every call). A wrong or missing key
is answered with :class:`gateway.errors.AuthenticationFailed` as the OpenAI error body.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.errors import AuthenticationFailed, send_error


class RequireApiKey:
    """Let a request through only with ``Authorization: Bearer <one of keys>``."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            try:
                check_key(self._keys, _header(scope, b"authorization"))
            except AuthenticationFailed as exc:
                await send_error(send, exc)  # through the outer middleware's send (request id)
                return
        await self.app(scope, receive, send)


def check_key(keys: Sequence[bytes], authorization: str) -> None:
    """Constant-time comparison against every key (no early exit that times which one)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing API key: send `Authorization: Bearer <key>`")
    given = token.strip().encode()
    if not any([hmac.compare_digest(given, key) for key in keys]):
        raise AuthenticationFailed("invalid API key")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""
