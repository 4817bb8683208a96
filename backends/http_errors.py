"""Node errors from HTTP: the one place that translates aiohttp's and httpx's exceptions
into the booagent tree (:func:`map_errors`), and a node's error statuses and error events
into :class:`backends.errors.NodeError` s (:func:`status_error`)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import httpx

from backends.errors import (
    ContextLengthExceeded,
    NodeError,
    NodeOverloaded,
    NodeRejected,
    NodeServerError,
    NodeTimeout,
    NodeUnreachable,
)
from backends.sse import Event

_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}


@contextmanager
def map_errors(node: str) -> Iterator[None]:
    """Translate aiohttp and httpx exceptions into the booagent tree; the one place that does."""
    try:
        yield
    except (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout) as exc:
        raise NodeTimeout(node, "connect timed out") from exc
    except (aiohttp.ServerTimeoutError, httpx.TimeoutException) as exc:
        raise NodeTimeout(node, f"timed out ({type(exc).__name__})") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise NodeUnreachable(
            node, f"refused the node's TLS certificate: {exc.certificate_error}"
        ) from exc
    except aiohttp.ClientSSLError as exc:
        raise NodeUnreachable(node, f"TLS handshake failed: {_tls_reason(exc)}") from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.ssl, ssl.SSLContext) and isinstance(exc.os_error, ConnectionResetError):
            raise NodeUnreachable(
                node, "the node ended the TLS handshake: it does not accept this gateway's "
                "certificate (signed by another CA, or expired)",
            ) from exc  # fmt: skip
        raise NodeUnreachable(node, f"cannot connect: {exc}") from exc
    except httpx.ConnectError as exc:
        raise NodeUnreachable(node, f"cannot connect: {exc}") from exc
    except (
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
    ) as exc:
        raise NodeUnreachable(node, f"connection lost: {exc or type(exc).__name__}") from exc
    except (aiohttp.ClientError, httpx.HTTPError) as exc:
        raise NodeUnreachable(node, f"{type(exc).__name__}: {exc}") from exc


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    """The handshake's failure in words: a node that refused the gateway's certificate says
    so with an alert (``certificate required``, ``unknown ca``, ``certificate expired``)."""
    cause = exc.os_error
    reason = getattr(cause, "reason", None) or str(cause)
    return f"{reason} (does the node trust this gateway's certificate and CA?)"


def retry_after_of(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            return None
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _error_fields(body: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI or llama-server error body (or the raw text)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500] or "no body", None
    if not isinstance(error, Mapping):
        return str(error)[:500], None
    code = error.get("code")
    if code is None or isinstance(code, int):
        code = error.get("type") if isinstance(error.get("type"), str) else None
    return str(error.get("message", "")), code


def status_error(node: str, status: int, body: bytes, retry_after: float | None) -> NodeError:
    """The error for a non-200 node answer, chosen by status and error code."""
    message, code = _error_fields(body)
    if status in (408, 409, 429, 503):
        return NodeOverloaded(node, f"{status}: {message}", retry_after=retry_after)
    if status >= 500:
        return NodeServerError(node, f"{status}: {message}")
    if code in _CONTEXT_CODES or ("context" in message.lower() and status == 400):
        return ContextLengthExceeded(node, message, status_code=400)
    return NodeRejected(node, message, status_code=status, code=code)


def event_error(node: str, event: Event, *, first: bool = False) -> NodeError:
    message, _ = _error_fields(event.data.encode())
    if event.kind == "data":
        message = message or event.data[:200]
    return NodeServerError(node, f"error in stream: {message}", inside_answer=first)
