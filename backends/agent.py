"""The node agent's HTTP surface (``booagent node``): one endpoint per machine, in front of
the llama.cpp servers it runs on loopback.

Each member the machine serves has a base URL ``/m/<member>`` that the gateway uses as a
node's URL:

- ``POST /m/<member>/v1/chat/completions`` (and ``.../input_tokens``, ``/v1/models``) is
  relayed to the member's local server byte for byte, streams included; when the gateway
  goes away the handler is cancelled, which closes the local request at once and frees the
  server's slot.
- ``GET /m/<member>/health`` answers without touching the local server's model lock (which
  ``llama_cpp.server`` takes even for ``/v1/models``): 200 with the member's server kind,
  slots and context, from the agent's own knowledge, once the local server answers; 503
  while it starts or restarts (what native ``llama-server`` says while it loads a model).
- ``GET /m/<member>/props``: native ``llama-server``'s own, relayed; for
  ``llama_cpp.server``, its slot count.
- ``GET /info``: the node's name, members, capacity and the host's facts
  (:mod:`backends.facts`).

Serving it with mutual TLS and announcing it are :mod:`backends.agent_run`'s; this module
only answers requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from backends.facts import host_facts
from backends.tls_listen import bad_request

_log = structlog.get_logger("booagent.node")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
_PASSED = ("content-type", "retry-after", "x-request-id")


@dataclass(frozen=True, slots=True)
class Served:
    """One member this machine serves: its local server and what the gateway should know."""

    member: str
    kind: str
    """``llama_server`` (native) or ``llama_cpp_server``."""
    local: str
    """The local server's base URL, on loopback."""
    slots: int
    n_ctx: int

    def record(self) -> dict[str, Any]:
        return {"member": self.member, "kind": self.kind, "slots": self.slots, "n_ctx": self.n_ctx}


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    served: Mapping[str, Served]
    ready: Callable[[str], bool]
    """Whether a member's local server is up now (the supervisor's view; no request made)."""
    priority: int = 0
    version: str = "0"


SESSION = web.AppKey("session", aiohttp.ClientSession)
INFO = web.AppKey("info", AgentInfo)


def agent_app(
    info: AgentInfo, session: aiohttp.ClientSession, *, client_certificate: bool = True
) -> web.Application:
    """The agent's routes; with ``client_certificate``, a request whose connection showed no
    certificate (the TLS layer has already checked any that was shown) gets a 403 that says
    what is missing."""
    middlewares = [_require_certificate] if client_certificate else []
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=middlewares)
    app[SESSION] = session
    app[INFO] = info
    app.router.add_get("/info", _info)
    app.router.add_get("/health", _health_all)
    app.router.add_get("/m/{member}/health", _health)
    app.router.add_get("/m/{member}/props", _props)
    app.router.add_route("*", "/m/{member}/v1/{tail:.*}", _relay)
    return app


@web.middleware
async def _require_certificate(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None or not ssl_object.getpeercert():
        _log.info("tls_refused", reason="no_client_certificate", peer=request.remote)
        raise web.HTTPForbidden(
            text=_error(
                "this node serves the cluster's gateway only: present a client certificate "
                "signed by the cluster CA (`booagent certs init` makes the gateway's)",
                "client_certificate_required",
            ),
            content_type="application/json",
        )
    return await handler(request)


def refusal(url: str) -> bytes:
    """The answer to plain HTTP sent to the agent's port (:mod:`backends.tls_listen`)."""
    message = f"this node speaks HTTPS with client certificates from the cluster CA: use {url}"
    return bad_request(_error(message, "https_required").encode())


def _served(request: web.Request) -> Served:
    member = request.match_info["member"]
    served = request.app[INFO].served.get(member)
    if served is None:
        known = ", ".join(request.app[INFO].served)
        raise web.HTTPNotFound(
            text=_error(f"this node does not serve `{member}` (it serves: {known})"),
            content_type="application/json",
        )
    return served


def _error(message: str, code: str = "not_found") -> str:
    body = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": body})


async def _info(request: web.Request) -> web.Response:
    info = request.app[INFO]
    return web.json_response(
        {
            "name": info.name,
            "version": info.version,
            "priority": info.priority,
            "members": [
                {**s.record(), "ready": info.ready(s.member)} for s in info.served.values()
            ],
            "host": await asyncio.to_thread(host_facts),  # nvidia-smi must not stall relays
        }
    )


async def _health_all(request: web.Request) -> web.Response:
    info = request.app[INFO]
    ready = {m: info.ready(m) for m in info.served}
    return web.json_response({"status": "ok", "node": info.name, "ready": ready})


async def _health(request: web.Request) -> web.Response:
    served = _served(request)
    if not request.app[INFO].ready(served.member):
        return web.json_response(
            {"error": {"message": "the local server is starting", "code": 503}}, status=503
        )
    return web.json_response({"status": "ok", "booagent_node": served.record()})


async def _props(request: web.Request) -> web.StreamResponse:
    served = _served(request)
    if served.kind == "llama_server":
        return await _relay(request)
    return web.json_response({"total_slots": served.slots, "chat_template": ""})


async def _relay(request: web.Request) -> web.StreamResponse:
    """The request to the member's local server, its answer back as it comes."""
    served = _served(request)
    tail = request.path.removeprefix(f"/m/{served.member}")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    session = request.app[SESSION]
    try:
        async with session.request(
            request.method,
            served.local + tail,
            params=request.query,
            data=await request.read(),
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            return await _stream_back(request, upstream)
    except aiohttp.ClientConnectionError as exc:
        raise web.HTTPServiceUnavailable(
            text=_error(f"the local server is not answering: {exc}", "node_unavailable"),
            content_type="application/json",
            headers={"retry-after": "2"},
        ) from exc


async def _stream_back(
    request: web.Request, upstream: aiohttp.ClientResponse
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream.status,
        headers={k: upstream.headers[k] for k in _PASSED if k in upstream.headers},
    )
    await response.prepare(request)
    async for block in upstream.content.iter_any():
        await response.write(block)
    await response.write_eof()
    return response
