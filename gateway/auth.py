"""Who is asking: every request to a protected route is given its client (a key's name).

:class:`IdentifyClient` is a pure ASGI middleware that the app puts on the protected routes
(``gateway.app.create_app``): declared once, not called by hand in each handler, and cheaper
than a Litestar guard (which copies the route handler on every call). When keys are in force
(:class:`gateway.keys.KeyStore`), a wrong or missing key is answered with
:class:`gateway.errors.AuthenticationFailed` as the OpenAI error body; without keys every
request is the anonymous client. The client goes into ``scope["state"]["client"]`` and its
name into every log line of the request (``key``); the key itself goes nowhere.
"""

from __future__ import annotations

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.errors import AuthenticationFailed, send_error
from gateway.keys import Keyring, KeyStore
from gateway.limits import Client

CLIENT = "client"
KEYS = "keys"
"""Where the app's state holds its :class:`KeyStore` (Litestar copies the routers a
middleware is declared on, and with them any store given to it as an argument)."""


class IdentifyClient:
    """Let a request through only with ``Authorization: Bearer <a key in force>`` when keys
    are required; mark it with its client either way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        keys: KeyStore = scope["litestar_app"].state[KEYS]
        try:
            client = identify(keys.keyring, _header(scope, b"authorization"))
        except AuthenticationFailed as exc:
            await send_error(send, exc)  # through the outer middleware's send (request id)
            return
        scope.setdefault("state", {})[CLIENT] = client
        with structlog.contextvars.bound_contextvars(key=client.name):
            await self.app(scope, receive, send)


def identify(keyring: Keyring, authorization: str) -> Client:
    """The client a request's ``Authorization`` header names. Without keys in force, the
    anonymous client whatever the header (clients such as Open WebUI send an empty one)."""
    if not keyring.required:
        return keyring.anonymous
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing API key: send `Authorization: Bearer <key>`")
    client = keyring.identify(token.strip())
    if client is None:
        raise AuthenticationFailed("invalid API key")
    return client


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""
