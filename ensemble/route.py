"""Routing: send each request to the member best suited to it.

:class:`Router` is the strategy behind the virtual model: from the request's kind, ask the
pool for the members configured for that kind, most preferred first (the rest follow as
fallbacks). Chores go to the fastest idle member. :class:`Pinned` serves one named member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace

from backends.base import Backend
from ensemble.base import NO_OPTIONS, Answer, Context, Options, callers_first, streamed
from ensemble.classify import Kind


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request should go: members in order of preference."""

    kind: Kind
    members: tuple[str, ...]
    prefer_idle: bool = False


def _with_fallbacks(preferred: Sequence[str], everyone: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*preferred, *everyone]))


@dataclass(frozen=True, slots=True)
class Router:
    """The `route` strategy: one member per request, chosen by the kind of request."""

    backend: Backend
    routes: Mapping[Kind, tuple[str, ...]]
    members: tuple[str, ...]
    callers: frozenset[str] = frozenset()
    name: str = "route"

    def deliberates(self, ctx: Context) -> bool:
        return False

    def plan(self, kind: Kind, options: Options = NO_OPTIONS, *, tools: bool = False) -> Plan:
        """The members for ``kind`` in order; for a tool turn, those able to call tools
        first."""
        preferred = self.routes.get(kind) or self.routes.get(Kind.GENERAL, ())
        members = _with_fallbacks(preferred, options.members or self.members)
        if options.members:
            members = tuple(m for m in members if m in options.members)
        if tools:
            members = callers_first(members, self.callers)
        return Plan(kind, members, prefer_idle=kind is Kind.CHORE)

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        plan = self.plan(ctx.kind, ctx.options, tools=ctx.tools)
        routed = replace(ctx.request, members=plan.members, prefer_idle=plan.prefer_idle)
        return streamed(self.backend, routed, self.name)


@dataclass(frozen=True, slots=True)
class Pinned:
    """Serve one named member (a client asked for it by name)."""

    backend: Backend
    member: str
    name: str = "member"

    def deliberates(self, ctx: Context) -> bool:
        return False

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        return streamed(self.backend, replace(ctx.request, members=(self.member,)), self.name)
