"""Auto: pick the strategy per request, from the kind of request and the config's table.

The table (``strategies.auto`` in the config) comes from the evaluation harness's
measurements: for each kind, the strategy that scored best within the latency budget. A
request's own ``booagent.strategy`` overrides it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from backends.base import ChatRequest, Chunk, Served
from ensemble.base import NO_OPTIONS, Options, Strategy
from ensemble.classify import kind_of


@dataclass(frozen=True, slots=True)
class Auto:
    """The ``auto`` strategy: delegates to ``strategies[table[kind]]`` (``fallback`` if unset)."""

    strategies: Mapping[str, Strategy]
    table: Mapping[str, str]
    fallback: str = "route"
    name: str = "auto"

    def choose(self, request: ChatRequest, served: Served, options: Options) -> Strategy:
        if options.strategy is not None and options.strategy != "auto":
            return self.strategies[options.strategy]
        kind = kind_of(request, served).value
        return self.strategies[self.table.get(kind, self.fallback)]

    def __call__(
        self, request: ChatRequest, served: Served, options: Options = NO_OPTIONS
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        chosen = self.choose(request, served, options)
        served.strategy = chosen.name
        return chosen(request, served, options)
