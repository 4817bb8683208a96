"""Requests with tools on llama.cpp nodes: asked the way the node understands, answered in
OpenAI's shape, and checked.

A request that offers tools (or whose conversation holds earlier calls and their results) is
rewritten for the node by :func:`backends.toolcalls_plan.plan_for`: the conversation in a form
its template understands, ``tool_choice`` enforced the way that node kind can (a JSON schema
for ``required`` and named calls). Its answer goes through :func:`relay`, which turns calls
written as text and the deltas the node sends into OpenAI ``tool_calls`` (stable ``call_`` ids,
the name once, ``arguments`` as fragments) and holds the calls back until the answer ends, to
check their arguments against each tool's JSON Schema. Calls that do not validate get one
re-ask under a schema that forces a valid call; invalid JSON arguments are never returned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from backends.base import Chunk
from backends.collect import Accumulator
from backends.config import Member
from backends.toolcalls import Call
from backends.toolcalls_messages import message_calls
from backends.toolcalls_plan import NodeKind, TemplateStyle, ToolPlan, plan_for
from backends.toolcalls_schema import call_errors
from backends.toolcalls_stream import ToolCallStream, call_deltas

Reask = Callable[[Mapping[str, Any]], AbstractAsyncContextManager[AsyncIterator[Chunk]]]
"""Sends another body to the same node (its slot is still held) and streams its answer."""


def involves_tools(body: Mapping[str, Any]) -> bool:
    """True when the request offers tools or its conversation holds tool calls or results."""
    if body.get("tools"):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls"))
        for m in messages
    )


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one node takes a request: its server kind and how its chat template treats tools."""

    kind: NodeKind
    style: TemplateStyle

    def plan(self, body: Mapping[str, Any]) -> ToolPlan:
        return plan_for(body, self.kind, style=self.style)

    def prepared(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The body this node is sent for ``body``."""
        return self.formatted(self.plan(body).body if involves_tools(body) else body)

    def formatted(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """``body`` with a ``json_schema`` response format in the form the node takes:
        ``llama_cpp.server`` knows only ``{"type": "json_object", "schema": ...}`` (it answers
        500 to OpenAI's ``json_schema`` type); native ``llama-server`` takes both."""
        fmt = body.get("response_format")
        if self.kind != "llama_cpp_server" or not isinstance(fmt, Mapping):
            return body
        if fmt.get("type") != "json_schema":
            return body
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        replaced: dict[str, Any] = {"type": "json_object"}
        if isinstance(schema, Mapping):
            replaced["schema"] = schema
        return {**body, "response_format": replaced}


def style_of(member: Member) -> TemplateStyle:
    """How a member's template treats tools until its node says (native llama-server reports
    its template): Hermes/Qwen tags when it calls tools, none otherwise."""
    return "hermes" if member.tools else "none"


async def relay(
    body: Mapping[str, Any], plan: ToolPlan, chunks: AsyncIterator[Chunk], reask: Reask,
    dialect: Dialect,
) -> AsyncGenerator[Chunk, None]:  # fmt: skip
    """The node's chunks for a request with tools, OpenAI-shaped; calls checked at the end.

    Text streams as it comes (held only while it may still be a call). Once the first call or
    the finishing chunk appears, the rest is held to the end of the answer; then the calls are
    checked, re-asked once if they fail (``reask`` with ``tool_choice`` forced), and sent with
    the finish (``finish_reason: "tool_calls"`` when there are calls)."""
    if not plan.tools:
        async for chunk in chunks:
            yield chunk
        return
    stream = ToolCallStream(plan.tools, parse_text=plan.parse_text)
    held: list[dict[str, Any]] = []
    async for chunk in chunks:
        for out in stream.feed(chunk.data):
            if held or _holds(out):
                held.append(out)
            else:
                yield Chunk(out, more=chunk.more)
    held += stream.close()
    for out in await _checked(body, plan, held, reask, dialect):
        yield Chunk(out)


def _holds(out: Mapping[str, Any]) -> bool:
    """A chunk with call deltas or the answer's finish reason: held until the answer ends."""
    choices = out.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    delta = choice.get("delta") or {}
    return bool(delta.get("tool_calls")) or choice.get("finish_reason") is not None


async def _checked(
    body: Mapping[str, Any], plan: ToolPlan, held: list[dict[str, Any]], reask: Reask,
    dialect: Dialect,
) -> list[dict[str, Any]]:  # fmt: skip
    """The held chunks, with their calls replaced by a re-ask's when they fail their checks.

    Calls that only repeat calls whose results the conversation already holds (small models
    do this after a tool result) get one re-ask for a text answer instead."""
    calls = calls_in(held)
    if calls and not plan.must_call and _repeats(calls, body):
        return await _in_words(body, held, reask, dialect)
    if calls and not any(call_errors(c, plan.tools) for c in calls):
        return held
    if not calls and not plan.must_call:
        return held
    again = await _reasked(body, calls, plan, reask, dialect)
    chosen = again if _faults(again, plan) < _faults(calls, plan) or not calls else calls
    chosen = [c for c in chosen if _parses(c.arguments)]
    return _with_calls(held, chosen)


async def _reasked(
    body: Mapping[str, Any], calls: Sequence[Call], plan: ToolPlan, reask: Reask,
    dialect: Dialect,
) -> list[Call]:  # fmt: skip
    """The calls the node gives when asked again with a call forced: the one tool all the
    failed calls named, else any of the tools."""
    names = {c.name for c in calls if call_errors(c, plan.tools)}
    only = plan.only or (names.pop() if len(names) == 1 and len(calls) == 1 else None)
    choice: Any = {"type": "function", "function": {"name": only}} if only else "required"
    forced = dialect.plan({**body, "tool_choice": choice})
    stream = ToolCallStream(forced.tools, parse_text=forced.parse_text)
    outs: list[dict[str, Any]] = []
    async with reask(forced.body) as chunks:
        async for chunk in chunks:
            outs += stream.feed(chunk.data)
    outs += stream.close()
    return calls_in(outs)


def _repeats(calls: Sequence[Call], body: Mapping[str, Any]) -> bool:
    """Every call has the name and arguments of a call already answered in the conversation."""
    answered = _answered(body.get("messages"))
    return all((c.name, _canonical(c.arguments)) in answered for c in calls)


def _answered(messages: Any) -> set[tuple[str, str]]:
    """(name, canonical arguments) of the calls in ``messages`` that have a tool result."""
    if not isinstance(messages, list):
        return set()
    turns = [m for m in messages if isinstance(m, Mapping)]
    results = {m.get("tool_call_id") for m in turns}
    return {
        (call.name, _canonical(call.arguments))
        for message in turns
        for call_id, call in message_calls(message)
        if call_id in results
    }


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments


async def _in_words(
    body: Mapping[str, Any], held: list[dict[str, Any]], reask: Reask, dialect: Dialect
) -> list[dict[str, Any]]:
    """The node's answer to the conversation with no call allowed, in place of the calls."""
    asked = dialect.plan({**body, "tool_choice": "none"})
    text: list[str] = []
    async with reask(asked.body) as chunks:
        async for chunk in chunks:
            text.append(chunk.content)
    _, finish, template = _finish_split(held)
    reason = "stop" if finish is None or _finish_of(finish) == "tool_calls" else _finish_of(finish)
    return [_chunk(template, {"content": "".join(text)}, None), _chunk(template, {}, reason)]


def calls_in(chunks: Sequence[Mapping[str, Any]]) -> list[Call]:
    """The calls that OpenAI-shaped chunks carry, their argument fragments joined by index."""
    acc = Accumulator()
    for chunk in chunks:
        acc.add(Chunk(chunk))
    return [Call(c["function"]["name"], c["function"]["arguments"]) for c in acc.calls()]


def _faults(calls: Sequence[Call], plan: ToolPlan) -> int:
    if not calls:
        return 1_000 if plan.must_call else 0
    return sum(len(call_errors(c, plan.tools)) for c in calls)


def _parses(arguments: str) -> bool:
    try:
        return isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


def _with_calls(held: list[dict[str, Any]], calls: Sequence[Call]) -> list[dict[str, Any]]:
    """``held`` without its call deltas, the ``calls`` in their place, then the finish (whose
    usage and timings are kept) saying ``tool_calls`` when there are calls."""
    kept, finish, template = _finish_split(held)
    out = [c for c in kept if c is not finish]
    if calls:
        out.append(_chunk(template, {"tool_calls": call_deltas(calls)}, None))
    if finish is None and calls:
        out.append(_chunk(template, {}, "tool_calls"))
    elif finish is not None:
        reason = "tool_calls" if calls else _finish_of(finish)
        reason = "stop" if reason == "tool_calls" and not calls else reason
        out.append({**finish, "choices": [{**finish["choices"][0], "finish_reason": reason}]})
    return out


def _finish_split(
    held: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Mapping[str, Any]]:
    """``held`` without its call deltas, its finishing chunk (None when it has none), and the
    chunk whose id and model the chunks written in place of the calls copy."""
    kept = [c for c in (_without_calls(chunk) for chunk in held) if c is not None]
    finish = next((c for c in kept if _finish_of(c) is not None), None)
    return kept, finish, finish or (held[-1] if held else {})


def _without_calls(chunk: dict[str, Any]) -> dict[str, Any] | None:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices:
        return chunk
    choice = choices[0]
    delta = {k: v for k, v in (choice.get("delta") or {}).items() if k != "tool_calls"}
    if not delta and choice.get("finish_reason") is None:
        return None
    return {**chunk, "choices": [{**choice, "delta": delta}]}


def _finish_of(chunk: Mapping[str, Any] | None) -> str | None:
    choices = (chunk or {}).get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    reason = choices[0].get("finish_reason")
    return reason if isinstance(reason, str) else None


def _chunk(
    template: Mapping[str, Any], delta: dict[str, Any], reason: str | None
) -> dict[str, Any]:
    out = {k: v for k, v in template.items() if k not in ("choices", "usage", "timings")}
    out["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason}]
    return out
