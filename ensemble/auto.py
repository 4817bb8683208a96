"""Auto: pick the strategy per request, from the kind of request and the config's table.

The table (``strategies.auto`` in the config) comes from the evaluation harness's
measurements: for each kind, the strategy that scored best within the latency budget. A
request's own ``booagent.strategy`` overrides it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ensemble.base import Answer, Context, Strategy


@dataclass(frozen=True, slots=True)
class Auto:
    """The ``auto`` strategy: delegates to ``strategies[table[kind]]`` (``fallback`` if unset)."""

    strategies: Mapping[str, Strategy]
    table: Mapping[str, str]
    fallback: str = "route"
    name: str = "auto"

    def choose(self, ctx: Context) -> Strategy:
        wanted = ctx.options.strategy
        if wanted is not None and wanted != "auto":
            return self.strategies[wanted]
        return self.strategies[self.table.get(ctx.kind.value, self.fallback)]

    def deliberates(self, ctx: Context) -> bool:
        return self.choose(ctx).deliberates(ctx)

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        return self.choose(ctx)(ctx)
