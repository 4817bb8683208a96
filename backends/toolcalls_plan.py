"""How to ask each kind of llama.cpp node for tool calls, and what to expect back.

A client's ``tool_choice`` (``none``, ``auto``, ``required`` or a named function) is honoured
differently by each node kind, so :func:`plan_for` rewrites the request body:

- ``none``: the tools are dropped (both kinds).
- ``auto``: the tools go to the template (plus ``tool_choice: "auto"`` on native nodes); small
  models mostly write the call as text in ``content`` (a ```json fence), which is parsed.
- ``required``: ``llama_cpp.server`` passes ``required`` to the template and forces nothing;
  native ``llama-server`` builds a grammar that still allows any text before ``<tool_call>``,
  and Qwen2.5-Coder models then write fenced calls and newlines until ``max_tokens``. So on both
  kinds the call is forced with ``response_format`` and :func:`call_schema` (the tools still go
  to the template, which describes them); the answer is a JSON call in ``content``.
- named: ``llama_cpp.server`` forces it itself (a grammar over the tool's parameters, answered as
  ``tool_calls``); native ``llama-server`` reads a named choice as ``auto``, so there the schema
  of that one tool is used.

``llama_cpp.server`` only knows ``response_format`` ``{"type": "json_object", "schema": ...}``
(``json_schema`` is refused); native servers get the OpenAI ``json_schema`` form. For a template
that knows no tools (:data:`TemplateStyle` ``"none"``) the tools are described in the system
message instead of sent. Conversations are rewritten with :func:`messages_for`. Every plan says
whether to look for calls written as text (``parse_text``) and whether the answer must be a call
(``must_call``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from backends.toolcalls import Tool, tools_of
from backends.toolcalls_messages import messages_for
from backends.toolcalls_schema import call_schema

NodeKind = Literal["llama_cpp_server", "llama_server"]
TemplateStyle = Literal["hermes", "tools", "none"]
"""How a chat template treats tools: Hermes/Qwen ``<tool_call>`` tags, some other tool
format, or not at all."""
Choice = Literal["none", "auto", "required", "named"]

_TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """A node request for a tool-using client request, and how to read the answer.

    ``tools`` are the tools the answer may call (for parsing and validation); ``only`` names the
    one a named choice allows.
    """

    body: Mapping[str, Any]
    tools: tuple[Tool, ...]
    parse_text: bool
    must_call: bool
    only: str | None = None


def template_style(chat_template: str) -> TemplateStyle:
    """Classify a Jinja chat template (GGUF ``tokenizer.chat_template``, native ``/props``)."""
    if "<tool_call>" in chat_template:
        return "hermes"
    return "tools" if "tools" in chat_template else "none"


def tool_choice_of(body: Mapping[str, Any]) -> tuple[Choice, str | None]:
    """The request's tool choice and, for a named one, the function's name.

    OpenAI's default is ``auto`` with tools and ``none`` without; anything unreadable is
    ``auto``.
    """
    if not tools_of(body):
        return "none", None
    choice = body.get("tool_choice", "auto")
    if choice in ("none", "auto", "required"):
        return choice, None
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    return ("named", name) if isinstance(name, str) else ("auto", None)


def plan_for(
    body: Mapping[str, Any], kind: NodeKind, *, style: TemplateStyle = "hermes"
) -> ToolPlan:
    """The node request for ``body`` on a node of ``kind`` whose template has ``style``.

    The input is not changed. A named choice of a tool that is not offered is treated as
    ``required``.
    """
    tools = tools_of(body)
    choice, name = tool_choice_of(body)
    if choice == "named" and not any(tool.name == name for tool in tools):
        choice, name = "required", None
    knows = style != "none"
    out = {key: value for key, value in body.items() if key not in _TOOL_FIELDS}
    if isinstance(body.get("messages"), list):
        out["messages"] = messages_for(
            body["messages"],
            template_knows_tools=knows,
            tools=tools if choice != "none" and not knows else (),
            hermes_calls=kind == "llama_cpp_server" and style == "hermes",
        )
    if choice == "none":
        return ToolPlan(out, (), parse_text=False, must_call=False)
    parallel = body.get("parallel_tool_calls") is not False and choice != "named"
    out.update(_choice_fields(tools, choice, name, kind=kind, knows=knows, parallel=parallel))
    return ToolPlan(out, tools, parse_text=True, must_call=choice != "auto", only=name)


def _choice_fields(
    tools: tuple[Tool, ...],
    choice: Choice,
    name: str | None,
    *,
    kind: NodeKind,
    knows: bool,
    parallel: bool,
) -> dict[str, Any]:
    """The fields that offer ``tools`` and enforce ``choice`` on this node."""
    offered = {"tools": [_wire(tool) for tool in tools]} if knows else {}
    if choice == "auto":
        return {**offered, "tool_choice": "auto"} if kind == "llama_server" and knows else offered
    if kind == "llama_cpp_server" and choice == "named":
        named = {"type": "function", "function": {"name": name}}
        return {"tools": [_wire(tool) for tool in tools], "tool_choice": named}
    schema = call_schema(tools, only=name, parallel=parallel)
    return {**offered, "response_format": _schema_format(kind, schema)}


def _schema_format(kind: NodeKind, schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` forcing ``schema``: ``llama_cpp.server`` only knows the
    ``json_object`` type with a ``schema`` field; native servers take both forms."""
    if kind == "llama_cpp_server":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "tool_calls", "schema": schema}}


def _wire(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.parameters)}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}
