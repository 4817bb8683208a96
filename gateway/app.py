"""The Litestar application: ``create_app(settings)``, no globals.

The lifespan owns the pool (its aiohttp session and health-probe tasks) and closes it. Handlers
stay thin: parse, pick the strategy, hand over to :mod:`gateway.chat`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp

from backends.build import build_pool
from backends.pool import Pool
from ensemble.auto import Auto
from ensemble.base import Context, Strategy
from ensemble.cascade import Cascade
from ensemble.classify import Kind
from ensemble.fanout import Ensemble
from ensemble.program import Program
from ensemble.route import Pinned
from ensemble.route import Router as RouteStrategy
from ensemble.tool_select import select_tools
from gateway.auth import RequireApiKey
from gateway.chat import ChatResponse, Exchange
from gateway.errors import EXCEPTION_HANDLERS, InvalidRequest, ModelNotFound
from gateway.logs import RequestIdMiddleware
from gateway.openapi import openapi_json
from gateway.schema import parse_chat
from gateway.settings import Settings
from gateway.wire import Identity

PoolFactory = Callable[[Settings], Pool]


@dataclass(slots=True)
class Gateway:
    """Everything a request handler needs, built once per app start."""

    settings: Settings
    pool: Pool
    strategies: dict[str, Strategy] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    models_body: bytes = b""
    openapi_body: bytes = b""

    @classmethod
    def build(cls, settings: Settings, pool: Pool) -> Gateway:
        gateway = cls(settings, pool)
        gateway.strategies = _strategies(settings, pool)
        gateway.members = [m.name for m in settings.members]
        gateway.models_body = msgspec.json.encode(_models_listing(gateway.strategies))
        auth = bool(settings.server.api_keys)
        gateway.openapi_body = openapi_json(list(gateway.strategies), gateway.members, auth=auth)
        return gateway

    def strategy_for(self, model: str) -> Strategy:
        strategy = self.strategies.get(model)
        if strategy is None:
            known = ", ".join(self.strategies)
            raise ModelNotFound(
                f"the model `{model}` does not exist; available: {known}", param="model"
            )
        return strategy

    def exchange(self, raw: bytes) -> Exchange:
        """The request body, validated and classified, with the strategy that answers it."""
        parsed = parse_chat(raw, members=self.members)
        checked = parsed.checked
        strategy = self.strategy_for(checked.model)
        if parsed.options.strategy is not None and checked.model in self.members:
            raise InvalidRequest(
                "`booagent.strategy` applies to the virtual model only", param="booagent.strategy"
            )
        tools = self.settings.strategies.tools
        body, selected = select_tools(parsed.forward, above=tools.select_above, keep=tools.keep)
        ctx = Context.of(
            body, buffered=not checked.stream, options=parsed.options, selected=selected
        )
        return Exchange(
            ctx,
            strategy,
            Identity(checked.model),
            checked.stream,
            parsed.include_usage,
            self.settings.strategies.keepalive_seconds,
        )


def _strategies(settings: Settings, pool: Pool) -> dict[str, Strategy]:
    """Every model name the gateway answers to, with the strategy behind it."""
    members = tuple(m.name for m in settings.members)
    config = settings.strategies
    routes = {
        Kind.CODE: settings.routes.code,
        Kind.GENERAL: settings.routes.general,
        Kind.CHORE: settings.routes.chore,
    }
    callers = frozenset(m.name for m in settings.members if m.tools)
    router = RouteStrategy(pool, routes, members, callers)
    named: dict[str, Strategy] = {
        "route": router,
        "cascade": Cascade(pool, config.cascade, members, pool.cheap_logprobs, callers),
        "ensemble": Ensemble(pool, config.ensemble, members, pool.member_slots, callers),
        "program": Program(pool, config.program, router, members),
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


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> ASGIApp:
    """The answer as a bare ASGI app (:class:`gateway.chat.ChatResponse`).

    The app's state is read from the request rather than asked for as a ``state`` parameter:
    Litestar resolves each handler parameter per request (docs/performance.md).
    """
    gateway = _gateway(request.app.state)
    return ChatResponse(gateway.exchange(await request.body()))


@get(["/v1/models", "/models"])
async def list_models(state: State) -> Response[bytes]:
    return Response(_gateway(state).models_body, media_type="application/json")


@get("/openapi.json")
async def openapi(state: State) -> Response[bytes]:
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
async def cluster(state: State) -> dict[str, Any]:
    gateway = _gateway(state)
    return {
        "virtual_model": gateway.settings.server.virtual_model,
        "nodes": gateway.pool.snapshot(),
    }


def create_app(settings: Settings, *, pool_factory: PoolFactory | None = None) -> Litestar:
    """The gateway app. ``pool_factory`` lets tests supply nodes of their own. Logging is the
    caller's to configure (the process entry point), not the app's."""
    make_pool = pool_factory or (
        lambda s: build_pool(s.members, s.nodes, s.policies, s.hosts, s.models_path)
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

    keys = settings.server.api_keys
    guarded = [DefineMiddleware(RequireApiKey, keys=keys)] if keys else []
    protected = Router(
        "/", route_handlers=[chat_completions, list_models, openapi, cluster], middleware=guarded
    )
    return Litestar(
        route_handlers=[protected, health, ready],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequestIdMiddleware],
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
