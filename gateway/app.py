"""The Litestar application: ``create_app(settings)``, no globals.

The lifespan owns the pool (its aiohttp session and health-probe tasks) and closes it. Handlers
stay thin: parse, pick the strategy, hand over to :mod:`gateway.chat`.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.types import ASGIApp, Scope

from backends.build import build_pool
from backends.errors import AuthenticationFailed, InvalidRequest, ModelNotFound
from backends.pool import Pool
from ensemble.auto import Auto
from ensemble.base import Strategy
from ensemble.cascade import Cascade
from ensemble.classify import Kind
from ensemble.fanout import Ensemble
from ensemble.program import Program
from ensemble.route import Pinned, Router
from gateway.chat import answer
from gateway.errors import EXCEPTION_HANDLERS
from gateway.logs import RequestIdMiddleware, configure_logging, request_id_of
from gateway.openapi import openapi_json
from gateway.schema import parse_chat
from gateway.settings import Settings

PoolFactory = Callable[[Settings], Pool]


@dataclass(slots=True)
class Gateway:
    """Everything a request handler needs, built once per app start."""

    settings: Settings
    pool: Pool
    strategies: dict[str, Strategy] = field(default_factory=dict)
    models_body: bytes = b""
    openapi_body: bytes = b""

    @classmethod
    def build(cls, settings: Settings, pool: Pool) -> Gateway:
        gateway = cls(settings, pool)
        gateway.strategies = _strategies(settings, pool)
        gateway.models_body = msgspec.json.encode(_models_listing(gateway.strategies))
        members = [m.name for m in settings.members]
        auth = bool(settings.server.api_keys)
        gateway.openapi_body = openapi_json(list(gateway.strategies), members, auth=auth)
        return gateway

    def is_member(self, model: str) -> bool:
        return any(m.name == model for m in self.settings.members)

    def strategy_for(self, model: str) -> Strategy:
        strategy = self.strategies.get(model)
        if strategy is None:
            known = ", ".join(self.strategies)
            raise ModelNotFound(
                f"the model `{model}` does not exist; available: {known}", param="model"
            )
        return strategy


def _strategies(settings: Settings, pool: Pool) -> dict[str, Strategy]:
    """Every model name the gateway answers to, with the strategy behind it."""
    members = tuple(m.name for m in settings.members)
    config = settings.strategies
    routes = {
        Kind.CODE: settings.routes.code,
        Kind.GENERAL: settings.routes.general,
        Kind.CHORE: settings.routes.chore,
    }
    router = Router(pool, routes, members)
    named: dict[str, Strategy] = {
        "route": router,
        "cascade": Cascade(
            pool, config.cascade, members, config.keepalive_seconds, pool.cheap_logprobs
        ),
        "ensemble": Ensemble(
            pool, config.ensemble, members, pool.member_slots, config.keepalive_seconds
        ),
        "program": Program(pool, config.program, router, members, config.keepalive_seconds),
    }
    named["auto"] = Auto(named, config.auto)
    virtual = settings.server.virtual_model
    strategies: dict[str, Strategy] = {virtual: named[config.default]}
    strategies.update({f"{virtual}:{name}": named[name] for name in STRATEGY_NAMES})
    strategies.update({name: Pinned(pool, name) for name in members})
    return strategies


STRATEGY_NAMES = ("auto", "route", "cascade", "ensemble", "program")


def _models_listing(strategies: dict[str, Strategy]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "booagent"} for n in strategies
        ],
    }


def _gateway(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway


def require_api_key(request: Request[Any, Any, Any]) -> None:
    """When keys are configured, demand ``Authorization: Bearer <key>`` (constant-time check).

    Called by each handler that needs it rather than run as a Litestar guard: Litestar copies
    the route handler for every guard call, which cost 3% of a request's instructions.
    """
    keys = _gateway(request.app.state).settings.server.api_keys
    if keys:
        _check_key(keys, _header(request.scope, b"authorization"))


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def _check_key(keys: Sequence[str], authorization: str) -> None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("missing API key: send `Authorization: Bearer <key>`")
    given = token.strip().encode()
    if not any([hmac.compare_digest(given, key.encode()) for key in keys]):
        raise AuthenticationFailed("invalid API key")


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """The answer as a bare ASGI response (:class:`gateway.chat.EventStream` for a stream).

    The app's state is read from the request rather than asked for as a ``state`` parameter:
    Litestar resolves each handler parameter per request (docs/performance.md).
    """
    require_api_key(request)
    gateway = _gateway(request.app.state)
    parsed = parse_chat(await request.body(), members=[m.name for m in gateway.settings.members])
    strategy = gateway.strategy_for(parsed.checked.model)
    if parsed.options.strategy is not None and gateway.is_member(parsed.checked.model):
        raise InvalidRequest(
            "`booagent.strategy` applies to the virtual model only", param="booagent.strategy"
        )
    return await answer(parsed, strategy, request.receive, request_id_of(request.scope))


@get(["/v1/models", "/models"])
async def list_models(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    require_api_key(request)
    return Response(_gateway(state).models_body, media_type="application/json")


@get("/openapi.json")
async def openapi(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    require_api_key(request)
    return Response(_gateway(state).openapi_body, media_type="application/json")


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready")
async def ready(state: State) -> Response[dict[str, Any]]:
    pool = _gateway(state).pool
    serving = [n.name for n in pool.nodes if n.health.readiness == "ready" and n.health.available()]
    status = 200 if serving else 503
    return Response({"ready": bool(serving), "nodes": serving}, status_code=status)


@get("/v1/cluster")
async def cluster(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    require_api_key(request)
    gateway = _gateway(state)
    return {
        "virtual_model": gateway.settings.server.virtual_model,
        "nodes": gateway.pool.snapshot(),
    }


def create_app(settings: Settings, *, pool_factory: PoolFactory | None = None) -> Litestar:
    """The gateway app. ``pool_factory`` lets tests supply nodes of their own."""
    configure_logging(settings.server.log_level)
    make_pool = pool_factory or (
        lambda s: build_pool(s.members, s.nodes, s.policies, hosts=s.hosts)
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = make_pool(settings)
        app.state.gateway = Gateway.build(settings, pool)
        try:
            await pool.probe_all()
            pool.start_probes()
            yield
        finally:
            await pool.aclose()

    return Litestar(
        route_handlers=[chat_completions, list_models, openapi, health, ready, cluster],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequestIdMiddleware],
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
