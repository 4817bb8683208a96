"""Tool calls that llama.cpp-served models write as text, and the tools a request offers.

Small models behind llama.cpp often answer a tool request with the call written in ``content``
instead of OpenAI ``tool_calls``. :func:`parse_calls` recognises what they write:

- Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one or several,
  the last one possibly unclosed;
- bare JSON: an object or an array of objects with ``name`` and ``arguments`` (or
  ``parameters``; an OpenAI-style ``{"type": "function", "function": {...}}`` wrapper too),
  several separated by whitespace, ``,`` or ``;``, also inside a `````` or ```json fence;
- Llama 3.x: ``<|python_tag|>`` followed by such objects separated by ``;``;
- Mistral: ``[TOOL_CALLS] [{...}, ...]`` and ``[TOOL_CALLS]name[ARGS]{...}``.

A call counts only when it names one of the offered tools and its arguments are a JSON object
(or a string holding one). Bare JSON and fences count only at the start of the answer, decided
on its first :data:`HOLD_LIMIT` characters by :func:`start_of`; the markers count anywhere and
the text before them is content. The streaming detector (``backends.toolcalls_stream``) follows
the same rules, so a streamed answer and the whole answer give the same calls.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HOLD_LIMIT = 64
"""An answer is told from a call on at most this many leading characters."""

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARK, PYTHON_TAG = "[TOOL_CALLS]", "<|python_tag|>"
MARKERS = (HERMES_OPEN, MISTRAL_MARK, PYTHON_TAG)
"""Markers that start tool calls anywhere in an answer."""

_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS))
_CALL_KEYS = ("name", "function", "type", "arguments", "parameters")
_FENCE_LANGS = ("", "json", "tool_call")
_FENCE_RE = re.compile(r"```([A-Za-z_]*)[ \t]*")
_MISTRAL_NAME_RE = re.compile(r"\s*([A-Za-z0-9_.:\-]+)(?:\[CALL_ID\][^\[]*)?\[ARGS\]")
_SPACE_RE = re.compile(r"\s*")
_SEPARATORS_RE = re.compile(r"[\s,;]*")
_NO_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class Tool:
    """A function a request offers: its name and the JSON schema of its arguments."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: _NO_PARAMETERS)
    description: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call: the function's name and its arguments as compact JSON text."""

    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class Parsed:
    """Calls found in an answer and the text outside them (unstripped, markers removed)."""

    calls: tuple[Call, ...]
    content: str = ""


class Start(enum.Enum):
    """What the beginning of an answer says about it."""

    CALL = "call"
    TEXT = "text"
    WAIT = "wait"


def tools_of(body: Mapping[str, Any]) -> tuple[Tool, ...]:
    """The function tools of an OpenAI chat request body; malformed entries are skipped."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return ()
    found = (_tool(entry) for entry in tools if isinstance(entry, dict))
    return tuple(tool for tool in found if tool is not None)


def _tool(entry: Mapping[str, Any]) -> Tool | None:
    function = entry.get("function")
    if entry.get("type", "function") != "function" or not isinstance(function, dict):
        return None
    name, parameters = function.get("name"), function.get("parameters")
    if not isinstance(name, str) or not name:
        return None
    description = function.get("description")
    return Tool(
        name=name,
        parameters=parameters if isinstance(parameters, dict) else _NO_PARAMETERS,
        description=description if isinstance(description, str) else "",
    )


def compact(value: Any) -> str:
    """``value`` as compact JSON text, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- telling a call from text by the start of the answer ---------------------------------


def start_of(text: str) -> Start:
    """Whether an answer that begins with ``text`` is a call, is text, or cannot be told yet.

    Bounded: only the first :data:`HOLD_LIMIT` characters are read, and an answer still
    undecided after them is text. Monotone: once ``CALL`` or ``TEXT``, any longer answer with
    the same beginning gets the same verdict.
    """
    head = text[:HOLD_LIMIT]
    verdict = _start_of(head.lstrip())
    if verdict is Start.WAIT and len(head) == HOLD_LIMIT:
        return Start.TEXT
    return verdict


def _start_of(s: str) -> Start:
    if not s:
        return Start.WAIT
    verdicts = (_marker_start(s), _fence_start(s), _json_start(s))
    if Start.CALL in verdicts:
        return Start.CALL
    return Start.WAIT if Start.WAIT in verdicts else Start.TEXT


def _expect(s: str, literal: str) -> Start:
    if s.startswith(literal):
        return Start.CALL
    return Start.WAIT if literal.startswith(s) else Start.TEXT


def _marker_start(s: str) -> Start:
    verdicts = [_expect(s, marker) for marker in MARKERS]
    if Start.CALL in verdicts:
        return Start.CALL
    return Start.WAIT if Start.WAIT in verdicts else Start.TEXT


def _fence_start(s: str) -> Start:
    verdict = _expect(s, "```")
    if verdict is not Start.CALL:
        return verdict
    rest = s[3:]
    lang = re.match(r"[A-Za-z_]*", rest)
    word = lang.group() if lang else ""
    after = rest[len(word) :]
    if not after:
        known = any(known.startswith(word.lower()) for known in _FENCE_LANGS)
        return Start.WAIT if known else Start.TEXT
    if word.lower() not in _FENCE_LANGS:
        return Start.TEXT
    after = after.lstrip()
    return _json_start(after) if after else Start.WAIT


def _json_start(s: str) -> Start:
    if s.startswith("["):
        s = s[1:].lstrip()
        if not s:
            return Start.WAIT
    if not s.startswith("{"):
        return Start.TEXT
    s = s[1:].lstrip()
    if not s:
        return Start.WAIT
    if not s.startswith('"'):
        return Start.TEXT
    verdicts = [_expect(s[1:], key + '"') for key in _CALL_KEYS]
    if Start.CALL in verdicts:
        return Start.CALL
    return Start.WAIT if Start.WAIT in verdicts else Start.TEXT


# --- parsing ------------------------------------------------------------------------------


def parse_calls(text: str, tools: Iterable[Tool]) -> Parsed | None:
    """The tool calls written in ``text``, or ``None`` when it holds none.

    Calls at the start (bare JSON or fenced, when :func:`start_of` says ``CALL``) come first;
    then every marker (``<tool_call>``, ``[TOOL_CALLS]``, ``<|python_tag|>``) must be followed
    by calls that parse, or the whole answer is text (``None``): a malformed call is shown to
    the client rather than lost. ``content`` is the text outside the calls.
    """
    names = frozenset(tool.name for tool in tools)
    calls: list[Call] = []
    start = 0
    if start_of(text) is Start.CALL:
        calls, start = _leading_calls(text, names)
    marked = _marked_calls(text, start, names)
    if marked is None:
        return None
    more, content = marked
    if not calls and not more:
        return None
    return Parsed(tuple(calls + more), content)


def _leading_calls(text: str, names: frozenset[str]) -> tuple[list[Call], int]:
    """Bare or fenced JSON calls from the start of ``text``, and where they end."""
    calls: list[Call] = []
    end = 0
    while True:
        at = _skip(text, end, _SEPARATORS_RE)
        found = _fenced_calls(text, at, names) if text.startswith("```", at) else None
        if found is None:
            found = _json_calls(text, at, names)
        if not found[0]:
            return calls, end
        calls += found[0]
        end = found[1]


def _fenced_calls(text: str, at: int, names: frozenset[str]) -> tuple[list[Call], int] | None:
    """Calls in a fence at ``text[at]``: only calls inside, closed by ````` or the end."""
    fence = _FENCE_RE.match(text, at)
    if fence is None or fence.group(1).lower() not in _FENCE_LANGS:
        return None
    calls, end = _json_calls(text, _skip(text, fence.end(), _SEPARATORS_RE), names)
    end = _skip(text, end, _SEPARATORS_RE)
    if not calls or not (end == len(text) or text.startswith("```", end)):
        return None
    return calls, min(end + 3, len(text))


def _json_calls(text: str, at: int, names: frozenset[str]) -> tuple[list[Call], int]:
    """JSON calls from ``text[at:]`` separated by whitespace, ``,`` or ``;``: up to the first
    thing that is not one. Returns the calls and the index just after the last of them."""
    calls: list[Call] = []
    end = at
    while True:
        start = _skip(text, end, _SEPARATORS_RE) if calls else at
        decoded = _decode(text, start)
        found = None if decoded is None else _calls_of(decoded[0], names)
        if decoded is None or found is None:
            return calls, end
        calls += found
        end = decoded[1]


def _marked_calls(text: str, start: int, names: frozenset[str]) -> tuple[list[Call], str] | None:
    """Calls after every marker from ``start`` on, and the text between them."""
    calls: list[Call] = []
    content: list[str] = []
    at = start
    while (marker := _MARKER_RE.search(text, at)) is not None:
        content.append(text[at : marker.start()])
        found = _after_marker(text, marker.start(), marker.group(), names)
        if found is None:
            return None
        calls += found[0]
        at = found[1]
    content.append(text[at:])
    return calls, "".join(content)


def _after_marker(
    text: str, at: int, marker: str, names: frozenset[str]
) -> tuple[list[Call], int] | None:
    begin = at + len(marker)
    if marker == HERMES_OPEN:
        return _hermes_block(text, begin, names)
    if marker == MISTRAL_MARK:
        return _mistral_calls(text, begin, names)
    calls, end = _json_calls(text, _skip(text, begin, _SPACE_RE), names)
    return (calls, end) if calls else None


def _hermes_block(text: str, begin: int, names: frozenset[str]) -> tuple[list[Call], int] | None:
    """The calls of one ``<tool_call>`` block, which holds only calls (maybe fenced) and ends
    at ``</tool_call>``, at the next ``<tool_call>`` or at the end of the answer."""
    at = _skip(text, begin, _SEPARATORS_RE)
    found = _fenced_calls(text, at, names) if text.startswith("```", at) else None
    calls, end = found if found is not None else _json_calls(text, at, names)
    end = _skip(text, end, _SEPARATORS_RE)
    if not calls:
        return None
    if text.startswith(HERMES_CLOSE, end):
        return calls, end + len(HERMES_CLOSE)
    return (calls, end) if end == len(text) or text.startswith(HERMES_OPEN, end) else None


def _mistral_calls(text: str, begin: int, names: frozenset[str]) -> tuple[list[Call], int] | None:
    at = _skip(text, begin, _SPACE_RE)
    if text.startswith(("[", "{"), at):
        calls, end = _json_calls(text, at, names)
        return (calls, end) if calls else None
    head = _MISTRAL_NAME_RE.match(text, begin)
    decoded = None if head is None else _decode(text, _skip(text, head.end(), _SPACE_RE))
    if head is None or decoded is None:
        return None
    call = _call_of({"name": head.group(1), "arguments": decoded[0]}, names)
    return None if call is None else ([call], decoded[1])


def _calls_of(value: Any, names: frozenset[str]) -> list[Call] | None:
    """The calls a decoded JSON value stands for: one object, or a non-empty array of them."""
    if isinstance(value, list):
        calls = [_call_of(item, names) for item in value]
        if not calls or None in calls:
            return None
        return [call for call in calls if call is not None]
    call = _call_of(value, names)
    return None if call is None else [call]


def _call_of(value: Any, names: frozenset[str]) -> Call | None:
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or name not in names:
        return None
    arguments = value["arguments"] if "arguments" in value else value.get("parameters")
    if isinstance(arguments, str):
        decoded = _decode(arguments.strip(), 0)
        arguments = decoded[0] if decoded and decoded[1] == len(arguments.strip()) else None
    if not isinstance(arguments, dict):
        return None
    return Call(name, compact(arguments))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(text: str, at: int) -> tuple[Any, int] | None:
    """The JSON value starting exactly at ``text[at]`` and the index after it, if any."""
    if not text.startswith(("{", "[", '"'), at):
        return None
    try:
        return _DECODER.raw_decode(text, at)
    except (ValueError, RecursionError):
        return None


def _skip(text: str, at: int, chars: re.Pattern[str]) -> int:
    """The index after the run of ``chars`` starting at ``text[at]``."""
    match = chars.match(text, at)
    return match.end() if match else at
