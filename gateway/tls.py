"""HTTPS on the gateway's port: its certificate, and its answer to plain HTTP sent there.

The connections are accepted by :class:`backends.tls_listen.HttpsListener` (re-exported here):
TLS ones reach uvicorn's protocol, plain-HTTP ones get :func:`refusal`, a 400 OpenAI error
naming the https:// URL.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec
import structlog

from backends.filewatch import Watched, every
from backends.tls_listen import HttpsListener, bad_request, https_url, listening_sockets
from gateway.errors import HttpsRequired, error_body

_log = structlog.get_logger("booagent.serve")

__all__ = [
    "HttpsListener",
    "ServerTls",
    "https_url",
    "listening_sockets",
    "pair_problem",
    "refusal",
    "server_context",
]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` and ``key`` (PEM): TLS 1.2 at least, HTTP/1.1 by ALPN.
    Raises ``OSError`` (``ssl.SSLError`` among them) if the files are unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert, key)
    return context


def pair_problem(cert: Path, key: Path) -> str | None:
    """What keeps ``cert`` and ``key`` from serving HTTPS (unreadable, not PEM, not a
    certificate and its key), or None."""
    for path in (cert, key):
        try:
            text = path.read_bytes()
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if b"-----BEGIN " not in text:
            return f"{path} is not a PEM file"
    try:
        server_context(cert, key)
    except ssl.SSLError as exc:
        return f"{cert} and {key} are not a certificate and its private key ({exc.reason})"
    return None


class ServerTls:
    """The server's TLS context. Each new connection takes the context current at its
    handshake, so :meth:`refresh` changes certificates without a restart."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._files = Watched(cert, key)
        self.context = server_context(cert, key)

    def refresh(self) -> bool:
        """Read the files again if they changed; connections accepted from now on use them,
        open ones keep theirs. Unusable files are logged and the current context is kept."""
        if not self._files.changed():
            return False
        try:
            self.context = server_context(self.cert, self.key)
        except OSError as exc:
            _log.error("https_reload_failed", cert=str(self.cert), error=str(exc))
            return False
        _log.info("https_reloaded", cert=str(self.cert))
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Refresh every ``interval`` seconds, until cancelled."""
        await every(interval, self.refresh)


def refusal(url: str) -> bytes:
    """The whole 400 response to a plain-HTTP request, with the OpenAI error body."""
    refused = HttpsRequired(f"this port speaks HTTPS: use {url}")
    return bad_request(msgspec.json.encode(error_body(refused)))
