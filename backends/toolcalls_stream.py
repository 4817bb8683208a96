"""Tool calls in streams and answers, made OpenAI-shaped whatever the node sent.

- :class:`CallDetector` watches streamed text for calls written as text (the formats of
  ``backends.toolcalls``), passing plain text through with a bounded delay.
- :class:`DeltaNormalizer` repairs the ``tool_calls`` deltas nodes do send (``llama_cpp.server``
  repeats the name in every delta; ids and indexes may be missing or vary).
- :func:`call_deltas` writes finished calls for a stream.
- :class:`ToolCallStream` applies all this to whole chunks: stable ``call_<24 hex>`` ids,
  ``finish_reason: "tool_calls"`` when there are calls. (Nodes are always asked to stream, so
  a whole answer is built from the rewritten chunks, never rewritten itself.)
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.toolcalls import MARKERS, Call, Start, Tool, parse_calls, start_of

_MARKER_TAIL = max(len(marker) for marker in MARKERS) - 1
"""The most text held back in plain-text mode: a marker's longest proper prefix."""


def new_call_id() -> str:
    """A fresh OpenAI-style call id: ``call_`` and 24 hex digits."""
    return "call_" + secrets.token_hex(12)


class _Mode(enum.Enum):
    UNDECIDED = "undecided"
    TEXT = "text"
    CALL = "call"


@dataclass(slots=True)
class CallDetector:
    """Splits a stream of text deltas into text safe to emit now and calls found at the end.

    Bound: until the answer's start is told apart (:func:`backends.toolcalls.start_of`, at
    most ``HOLD_LIMIT`` = 64 characters) the text is held; once it is text, at most 13
    characters are held (a suffix that could begin a marker). From a call start, or from a
    marker met later, everything is buffered and parsed at :meth:`finish`; if it does not
    parse it comes out as text then. The result does not depend on how the text is split.
    """

    tools: tuple[Tool, ...]
    _held: str = ""
    _mode: _Mode = _Mode.UNDECIDED

    @property
    def buffering(self) -> bool:
        """True once a (possible) call is being buffered to the end of the stream."""
        return self._mode is _Mode.CALL

    def feed(self, piece: str) -> str:
        """Take the next text delta; return the text that can be emitted now."""
        self._held += piece
        if self._mode is _Mode.UNDECIDED:
            verdict = start_of(self._held)
            if verdict is Start.WAIT:
                return ""
            self._mode = _Mode.CALL if verdict is Start.CALL else _Mode.TEXT
        return "" if self._mode is _Mode.CALL else self._pass_text()

    def finish(self) -> tuple[str, tuple[Call, ...]]:
        """End of the stream: the remaining text to emit and the calls found."""
        held, self._held = self._held, ""
        if self._mode is _Mode.TEXT or not held:
            return held, ()
        parsed = parse_calls(held, self.tools)
        return (held, ()) if parsed is None else (parsed.content, parsed.calls)

    def _pass_text(self) -> str:
        held = self._held
        found = [i for i in (held.find(marker) for marker in MARKERS) if i >= 0]
        if found:
            cut = min(found)
            self._mode, self._held = _Mode.CALL, held[cut:]
            return held[:cut]
        keep = _marker_prefix_len(held)
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep]


def _marker_prefix_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a marker."""
    for size in range(min(len(text), _MARKER_TAIL), 0, -1):
        tail = text[-size:]
        if any(marker.startswith(tail) for marker in MARKERS):
            return size
    return 0


@dataclass(slots=True)
class _Slot:
    index: int
    id: str
    name: str = ""
    arguments: str = ""
    sent: int = 0
    announced: bool = False

    def complete(self) -> bool:
        try:
            json.loads(self.arguments)
        except ValueError:
            return False
        return True


@dataclass(slots=True)
class DeltaNormalizer:
    """Turns a node's ``tool_calls`` deltas into OpenAI-shaped ones.

    Each call gets a stable ``call_<24 hex>`` id and an ``index`` (from ``first_index`` on);
    its first delta carries ``id``, ``type`` and ``name``, later ones only ``arguments``
    fragments, which concatenate to the node's arguments text. A delta belongs to the call of
    its ``index``; without one, to the call of its known ``id``; otherwise to the current call,
    unless that call's arguments are already complete JSON and the delta brings a new id or
    another name. A call's deltas are held until its name is known.
    """

    new_id: Callable[[], str] = new_call_id
    first_index: int = 0
    _slots: list[_Slot] = field(default_factory=list)
    _by_index: dict[int, _Slot] = field(default_factory=dict)
    _by_id: dict[str, _Slot] = field(default_factory=dict)

    def feed(self, deltas: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Take one chunk's ``tool_calls`` list; return the deltas to send for it."""
        out = []
        for delta in deltas:
            slot = self._slot_for(delta)
            function = delta.get("function")
            function = function if isinstance(function, Mapping) else {}
            name, fragment = function.get("name"), function.get("arguments")
            if isinstance(name, str) and name and not slot.name:
                slot.name = name
            if isinstance(fragment, str):
                slot.arguments += fragment
            fixed = _next_delta(slot)
            if fixed is not None:
                out.append(fixed)
        return out

    def calls(self) -> tuple[Call, ...]:
        """The calls seen so far, with their arguments text as the node wrote it."""
        return tuple(Call(slot.name, slot.arguments) for slot in self._slots if slot.name)

    def _slot_for(self, delta: Mapping[str, Any]) -> _Slot:
        index, node_id = delta.get("index"), delta.get("id")
        if isinstance(index, int):
            if index in self._by_index:
                return self._by_index[index]
        elif isinstance(node_id, str) and node_id in self._by_id:
            return self._by_id[node_id]
        elif self._slots and not self._starts_new(delta):
            return self._slots[-1]
        slot = _Slot(index=self.first_index + len(self._slots), id=self.new_id())
        self._slots.append(slot)
        if isinstance(index, int):
            self._by_index[index] = slot
        if isinstance(node_id, str):
            self._by_id[node_id] = slot
        return slot

    def _starts_new(self, delta: Mapping[str, Any]) -> bool:
        current = self._slots[-1]
        function = delta.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        other = isinstance(delta.get("id"), str) or (bool(name) and name != current.name)
        return other and current.complete()


def _next_delta(slot: _Slot) -> dict[str, Any] | None:
    if not slot.name:
        return None
    fragment, slot.sent = slot.arguments[slot.sent :], len(slot.arguments)
    if slot.announced:
        return {"index": slot.index, "function": {"arguments": fragment}} if fragment else None
    slot.announced = True
    return {
        "index": slot.index,
        "id": slot.id,
        "type": "function",
        "function": {"name": slot.name, "arguments": fragment},
    }


def call_deltas(
    calls: Iterable[Call], *, first_index: int = 0, new_id: Callable[[], str] = new_call_id
) -> list[dict[str, Any]]:
    """Stream deltas for finished calls: one per call, with id, type, name and arguments."""
    return [
        {
            "index": first_index + offset,
            "id": new_id(),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for offset, call in enumerate(calls)
    ]


@dataclass(slots=True)
class ToolCallStream:
    """Rewrites a node's ``chat.completion.chunk`` dicts (first choice) for a tool request.

    ``parse_text`` runs a :class:`CallDetector` on ``content``; ``tool_calls`` deltas pass
    through a :class:`DeltaNormalizer`; the legacy ``function_call`` is dropped. At the chunk
    with ``finish_reason`` the held text and calls found are sent first, then the finish chunk,
    whose reason becomes ``"tool_calls"`` when the answer has calls. Chunks without choices
    (usage) pass unchanged. A chunk left with nothing to say is dropped.
    """

    tools: tuple[Tool, ...]
    parse_text: bool = True
    new_id: Callable[[], str] = new_call_id
    _detector: CallDetector = field(init=False)
    _normalizer: DeltaNormalizer = field(init=False)
    _found: tuple[Call, ...] = ()
    _finished: bool = False
    _last: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._detector = CallDetector(self.tools)
        self._normalizer = DeltaNormalizer(new_id=self.new_id)

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Take one node chunk; return the chunks to send for it, in order."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return [dict(chunk)]
        choice, self._last = choices[0], chunk
        raw = choice.get("delta")
        delta: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        out = [] if self._finished else self._body_chunk(chunk, choice, delta)
        reason = choice.get("finish_reason")
        if reason is not None and not self._finished:
            out += self._flush(chunk)
            out.append(_chunk(chunk, {}, "tool_calls" if self.has_calls else reason))
            self._finished = True
        return out

    def close(self) -> list[dict[str, Any]]:
        """End of the node's stream. If it was cut before its finish chunk, what is still held
        goes out as text or calls, with no finish reason; otherwise nothing."""
        if self._finished:
            return []
        self._finished = True
        return self._flush(self._last)

    @property
    def has_calls(self) -> bool:
        """True when the answer so far has calls, sent by the node or found in its text."""
        return bool(self._found) or bool(self._normalizer.calls())

    def _body_chunk(
        self, chunk: Mapping[str, Any], choice: Mapping[str, Any], delta: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        skip = ("content", "tool_calls", "function_call")
        fixed = {k: v for k, v in delta.items() if k not in skip and v is not None}
        content, tool_deltas = delta.get("content"), delta.get("tool_calls")
        if isinstance(content, str) and content:
            text = self._detector.feed(content) if self.parse_text else content
            if text:
                fixed["content"] = text
        if isinstance(tool_deltas, list):
            calls = self._normalizer.feed(d for d in tool_deltas if isinstance(d, Mapping))
            if calls:
                fixed["tool_calls"] = calls
        return [_chunk(chunk, fixed, None, choice.get("logprobs"))] if fixed else []

    def _flush(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        text, calls = self._detector.finish() if self.parse_text else ("", ())
        self._found = calls
        out = []
        if text and not (calls and text.isspace()):
            out.append(_chunk(chunk, {"content": text}, None))
        if calls:
            first = len(self._normalizer.calls())
            deltas = call_deltas(calls, first_index=first, new_id=self.new_id)
            out.append(_chunk(chunk, {"tool_calls": deltas}, None))
        return out


def _chunk(
    template: Mapping[str, Any], delta: dict[str, Any], reason: str | None, logprobs: Any = None
) -> dict[str, Any]:
    """A chunk like ``template`` (id, model, created...) with one choice."""
    out = {k: v for k, v in template.items() if k != "choices"}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    out["choices"] = [choice]
    return out
