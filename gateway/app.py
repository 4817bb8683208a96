"""The Litestar application: ``create_app(settings)``, no globals.

The lifespan owns the pool (its aiohttp session and health-probe tasks) and the keys file's
watcher, and stops them. Handlers stay thin: parse, check the client's limits, pick the
strategy, hand over to :mod:`gateway.chat`, which reports the request's end back
(:meth:`Gateway.report`: log line, metrics, recent requests, the client's limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from litestar import Litestar, MediaType, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.types import ASGIApp

from backends.build import build_pool
from backends.discovery import Discovery
from backends.mtls import TlsFiles
from backends.pool import Pool
from ensemble.auto import Auto
from ensemble.base import Context, Strategy
from ensemble.cascade import Cascade
from ensemble.classify import Kind
from ensemble.fanout import Ensemble
from ensemble.program import Program
from ensemble.route import Pinned
from ensemble.route import Router as RouteStrategy
from ensemble.tested import Tested
from ensemble.tool_select import select_tools
from gateway.auth import CLIENT, KEYS, IdentifyClient
from gateway.chat import ChatResponse, Exchange
from gateway.errors import EXCEPTION_HANDLERS, InvalidRequest, ModelNotFound
from gateway.keys import KeyStore
from gateway.limits import Client, Limiter, sized
from gateway.logs import RequestIdMiddleware
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.openapi import openapi_json
from gateway.recent import Recent
from gateway.record import Ended, log_request
from gateway.schema import parse_chat
from gateway.settings import Settings
from gateway.wire import Identity

PoolFactory = Callable[[Settings], Pool]
DASHBOARD = Path(__file__).resolve().parent / "dashboard.html"


@dataclass(slots=True)
class Gateway:
    """Everything a request handler needs, built once per app start."""

    settings: Settings
    pool: Pool
    keys: KeyStore
    metrics: Metrics
    strategies: dict[str, Strategy] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    models_body: bytes = b""
    openapi_body: bytes = b""
    dashboard_body: bytes = b""
    limiter: Limiter = field(default_factory=Limiter)
    recent: Recent = field(default_factory=Recent)

    @classmethod
    def build(cls, settings: Settings, pool: Pool, keys: KeyStore) -> Gateway:
        gateway = cls(settings, pool, keys, Metrics(pool.snapshot))
        gateway.strategies = _strategies(settings, pool)
        gateway.members = [m.name for m in settings.members]
        gateway.models_body = msgspec.json.encode(_models_listing(gateway.strategies))
        auth = keys.keyring.required
        gateway.openapi_body = openapi_json(list(gateway.strategies), gateway.members, auth=auth)
        gateway.dashboard_body = DASHBOARD.read_bytes()
        return gateway

    def report(self, ended: Ended) -> None:
        """A request ended: its log line, metrics, the recent list, its client's limits."""
        log_request(ended)
        self.metrics.observe(ended)
        self.recent.add(ended)
        self.limiter.release(ended.client, sum(ended.tokens))

    def admit(self, raw: bytes, client: Client) -> Exchange:
        """The request's exchange, once the client's limits let it in (400 for a request
        larger than they allow, 429 over a rate)."""
        exchange = self.exchange(raw, client)
        self.limiter.admit(client)
        return exchange

    def strategy_for(self, model: str) -> Strategy:
        strategy = self.strategies.get(model)
        if strategy is None:
            known = ", ".join(self.strategies)
            raise ModelNotFound(
                f"the model `{model}` does not exist; available: {known}", param="model"
            )
        return strategy

    def exchange(self, raw: bytes, client: Client) -> Exchange:
        """The request body, validated and classified, with the strategy that answers it."""
        parsed = parse_chat(raw, members=self.members)
        checked = parsed.checked
        strategy = self.strategy_for(checked.model)
        if parsed.options.strategy is not None and checked.model in self.members:
            raise InvalidRequest(
                "`booagent.strategy` applies to the virtual model only", param="booagent.strategy"
            )
        tools = self.settings.strategies.tools
        forward = sized(parsed.forward, client.limits)
        body, selected = select_tools(forward, above=tools.select_above, keep=tools.keep)
        ctx = Context.of(
            body,
            buffered=not checked.stream,
            options=parsed.options,
            selected=selected,
            client=client.name,
        )
        return Exchange(
            ctx,
            strategy,
            Identity(checked.model),
            checked.stream,
            parsed.include_usage,
            self.settings.strategies.keepalive_seconds,
            client,
            self.report,
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
        "tested": Tested(pool, config.tested, router, members, pool.member_pace, callers),
    }
    named["auto"] = Auto(named, config.auto)
    virtual = settings.server.virtual_model
    strategies: dict[str, Strategy] = {virtual: named[config.default]}
    strategies.update({f"{virtual}:{name}": named[name] for name in STRATEGY_NAMES})
    strategies.update({name: Pinned(pool, name) for name in members})
    return strategies


STRATEGY_NAMES = ("auto", "route", "cascade", "ensemble", "program", "tested")


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
    client: Client = request.scope["state"][CLIENT]
    return ChatResponse(gateway.admit(await request.body(), client))


@get(["/v1/models", "/models"])
async def list_models(state: State) -> Response[bytes]:
    return Response(_gateway(state).models_body, media_type="application/json")


@get("/openapi.json")
async def openapi(state: State) -> Response[bytes]:
    return Response(_gateway(state).openapi_body, media_type="application/json")


@get("/dashboard", media_type=MediaType.HTML)
async def dashboard(state: State) -> bytes:
    """The live status page: static HTML that polls ``/v1/cluster`` (with the API key the
    user types in, when keys are required); the page itself holds no data."""
    return _gateway(state).dashboard_body


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
    """The nodes, the last requests and the throughput of the last minute."""
    gateway = _gateway(state)
    keyring = gateway.keys.keyring
    names = keyring.names if keyring.required else [keyring.anonymous.name]
    return {
        "virtual_model": gateway.settings.server.virtual_model,
        "nodes": gateway.pool.snapshot(),
        "throughput": gateway.recent.throughput(),
        "keys": {name: gateway.limiter.usage(name) for name in names},
        "requests": gateway.recent.requests(),
    }


@get("/metrics")
async def metrics(state: State) -> Response[bytes]:
    return Response(_gateway(state).metrics.exposition(), media_type=CONTENT_TYPE)


def create_app(settings: Settings, *, pool_factory: PoolFactory | None = None) -> Litestar:
    """The gateway app. ``pool_factory`` lets tests supply nodes of their own. Logging is the
    caller's to configure (the process entry point), not the app's."""
    tls = settings.cluster_tls()
    make_pool = pool_factory or (
        lambda s: build_pool(s.members, s.nodes, s.policies, s.hosts, s.models_path, tls)
    )

    server = settings.server
    keys = KeyStore(server.api_keys, server.keys_path, server.limits)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = make_pool(settings)
        app.state.gateway = Gateway.build(settings, pool, keys)
        watchers = [asyncio.create_task(keys.watch())]
        if tls is not None:
            watchers.append(asyncio.create_task(tls.watch()))
        try:
            with reload_on_hangup(keys.reload):
                await pool.probe_all()
                pool.start_probes()
                async with _discovery(settings, pool, tls):
                    yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await pool.aclose()

    protected = Router(
        "/",
        route_handlers=[chat_completions, list_models, openapi, cluster, metrics],
        middleware=[IdentifyClient],
    )
    return Litestar(
        route_handlers=[protected, health, ready, dashboard],
        lifespan=[lifespan],
        state=State({KEYS: keys}),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[RequestIdMiddleware],
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


@contextlib.contextmanager
def reload_on_hangup(reload: Callable[[], object]) -> Iterator[None]:
    """SIGHUP reloads the keys while the app runs, where the process lets the app have signals
    (the main thread of a Unix process; elsewhere, such as in tests, the file watch alone)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


@contextlib.asynccontextmanager
async def _discovery(settings: Settings, pool: Pool, tls: TlsFiles | None) -> AsyncIterator[None]:
    """Node agents that announce themselves join the pool while the app runs, when the
    config's ``cluster.discover`` asks for it."""
    cluster = settings.cluster
    if cluster is None or not cluster.discover or tls is None:
        yield
        return
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        Discovery(pool, cluster, tls, session, list(cluster.interfaces) or None),
    ):
        yield
