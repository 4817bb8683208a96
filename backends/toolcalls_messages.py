"""Conversations with tool calls, rewritten so a node's chat template understands them.

OpenAI clients send earlier calls as assistant messages with ``tool_calls`` (``arguments`` a
JSON string, ``content`` often null) and their results as ``tool`` messages. What a node makes
of them depends on its server and template:

- native ``llama-server --jinja`` takes them as they are (string or object arguments, null
  content) and hands templates that want objects parsed arguments;
- ``llama_cpp.server`` validates ``arguments`` as a string and ``content`` as a string, and
  passes the messages to the template unchanged: a template that writes
  ``tool_call.arguments | tojson`` (Qwen2.5, Hermes, Llama 3.1) then shows the model a quoted
  string instead of an object. With ``hermes_calls`` the calls are written into ``content``
  exactly as a Hermes/Qwen template renders object arguments;
- a template that knows no tools (SmolLM2) gets calls as JSON text in the assistant message,
  results as user messages ``Tool result (name): ...``, and the tools described in the system
  message (:func:`tools_prompt`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from backends.toolcalls import Call, Tool, compact

_TOOLS_INTRO = (
    "You can call these tools. To call one, answer with only a JSON object "
    '{"name": <tool name>, "arguments": <arguments object>}, one object per line for '
    "several calls, and nothing else. Otherwise answer normally."
)


def messages_for(
    messages: Iterable[Mapping[str, Any]],
    *,
    template_knows_tools: bool,
    tools: Sequence[Tool] = (),
    hermes_calls: bool = False,
) -> list[dict[str, Any]]:
    """``messages`` rewritten for a node (see the module docstring); the input is not changed.

    With ``template_knows_tools``: assistant ``tool_calls`` keep string ``arguments`` and get
    ``content`` ``""`` instead of null (or, with ``hermes_calls``, become Hermes text in
    ``content``); ``tool`` messages get string content. Without it: calls become text, results
    user messages, and ``tools`` (if any) are described in the system message.
    """
    names: dict[str, str] = {}
    out = []
    for message in messages:
        calls = message_calls(message)
        names.update({call_id: call.name for call_id, call in calls})
        if template_knows_tools:
            out.append(_known(message, calls, hermes_calls))
        else:
            out.append(_unknown(message, calls, names))
    if not template_knows_tools and tools:
        out = _with_tools_prompt(out, tools)
    return out


def tools_prompt(tools: Sequence[Tool]) -> str:
    """A system-prompt section describing ``tools`` and how to call them, for templates
    that know no tools; calls written that way are found by ``parse_calls``."""
    lines = [_TOOLS_INTRO]
    for tool in tools:
        entry = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        lines.append(json.dumps(entry, ensure_ascii=False))
    return "\n".join(lines)


def hermes_text(content: str, calls: Sequence[Call]) -> str:
    """An assistant turn as a Hermes/Qwen template renders it from object arguments."""
    blocks = [
        '<tool_call>\n{"name": "'
        + call.name
        + '", "arguments": '
        + json.dumps(_loads(call.arguments), ensure_ascii=False)
        + "}\n</tool_call>"
        for call in calls
    ]
    return (content + "\n" if content else "") + "\n".join(blocks)


def calls_text(content: str, calls: Sequence[Call]) -> str:
    """An assistant turn for a template without tools: content, then one JSON call a line."""
    lines = [compact({"name": call.name, "arguments": _loads(call.arguments)}) for call in calls]
    return "\n".join([content, *lines] if content else lines)


def message_calls(message: Mapping[str, Any]) -> list[tuple[str, Call]]:
    """The (id, call) pairs of an assistant message's ``tool_calls``."""
    sent = message.get("tool_calls") if message.get("role") == "assistant" else None
    if not isinstance(sent, list):
        return []
    out = []
    for entry in sent:
        function = entry.get("function") if isinstance(entry, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else compact(arguments or {})
        call_id = entry.get("id")
        out.append((call_id if isinstance(call_id, str) else "", Call(function["name"], text)))
    return out


def _known(
    message: Mapping[str, Any], calls: list[tuple[str, Call]], hermes_calls: bool
) -> dict[str, Any]:
    fixed = dict(message)
    role, content = message.get("role"), message.get("content")
    if role == "tool" or (role in ("assistant", "system") and content is None):
        fixed["content"] = _text(content)
    if calls and hermes_calls:
        del fixed["tool_calls"]
        fixed["content"] = hermes_text(_text(content), [call for _, call in calls])
    elif calls:
        fixed["tool_calls"] = [
            {
                "id": call_id or f"call_{position}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for position, (call_id, call) in enumerate(calls)
        ]
    return fixed


def _unknown(
    message: Mapping[str, Any], calls: list[tuple[str, Call]], names: Mapping[str, str]
) -> dict[str, Any]:
    role = message.get("role")
    content = _text(message.get("content"))
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = message.get("name") or names.get(call_id if isinstance(call_id, str) else "", "")
        label = f"Tool result ({name})" if name else "Tool result"
        return {"role": "user", "content": f"{label}: {content}"}
    if role == "assistant" and (calls or "tool_calls" in message):
        return {"role": "assistant", "content": calls_text(content, [c for _, c in calls])}
    if message.get("content") is None:
        return {**message, "content": ""}
    return dict(message)


def _with_tools_prompt(
    messages: list[dict[str, Any]], tools: Sequence[Tool]
) -> list[dict[str, Any]]:
    prompt = tools_prompt(tools)
    if messages and messages[0].get("role") == "system":
        system = _text(messages[0].get("content"))
        first = {**messages[0], "content": f"{system}\n\n{prompt}" if system else prompt}
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def _text(content: Any) -> str:
    """Message content as a string: text parts joined, null as ``""``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, Mapping))
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _loads(arguments: str) -> Any:
    """Arguments text as a value; text that is not JSON stays a string."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
