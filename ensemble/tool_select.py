"""Which of many offered tools a turn may need.

Chat front ends offer every tool they have with every turn: Open WebUI 0.12.4 sends 36 (notes,
memories, calendars, knowledge bases...), 6,623 tokens. A small model then reads for minutes
before its first token (146 s for the 1.5B on 2 CPU cores), and, offered tools that have
nothing to do with the question, it tends to invent one: asked for a palindrome function, the
1.5B answered with a made-up ``is_palindrome`` tool definition instead of code. So when a turn
offers more than ``select_above`` tools and leaves the choice to the model (``tool_choice``
auto), only the tools its words point to are sent: those whose name or description shares a
word with the user's last message, the best ``keep`` of them, and every tool the conversation
has already called. A turn that points to none is sent without tools. The answer's
``booagent.tools`` says what was offered and what was sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.toolcalls_messages import message_calls
from ensemble.classify import last_user_text

_WORD = re.compile(r"[a-z]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOP = frozenset(
    """
    the a an and or but to of for in on at by from with about into over as is are was were
    be been this that these those it its if then than not no yes you your yours me my we our
    they their he she his her them can could will would should may might must do does did
    done have has had any all some each every one two new given use used using get gets set
    list lists make made return returns value values item items data info information thing
    things when what which who whom whose where why how please want need like just also only
    via current specific optional default true false string number write check whether
    create update delete add remove search find view show tell give read call run function
    tool tools result results name names type types work need
    """.split()  # noqa: SIM905
)
"""Words that say nothing about which tool: grammar, and the verbs every tool shares."""


@dataclass(frozen=True, slots=True)
class Selection:
    """What was offered and what was sent."""

    offered: int
    sent: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {"offered": self.offered, "sent": list(self.sent)}


def stems(text: str) -> set[str]:
    """The content words of ``text`` (names split at ``_`` and case changes), lowercased and
    stripped of plain endings; both sides of a match are stemmed the same way."""
    spaced = _CAMEL.sub(" ", text).replace("_", " ").lower()
    found = set()
    for word in _WORD.findall(spaced):
        if word in _STOP or len(word) < 3:
            continue
        word = _stem(word)
        if word not in _STOP:
            found.add(word)
    return found


def _stem(word: str) -> str:
    """``tasks`` -> ``task``, ``entries`` -> ``entry``, ``searching`` -> ``search``."""
    for ending, replaced in (("ies", "y"), ("ing", ""), ("ed", "")):
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)] + replaced
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def select_tools(
    body: Mapping[str, Any], *, above: int, keep: int
) -> tuple[Mapping[str, Any], Selection | None]:
    """``body`` with only the tools its last user message points to (see the module), and
    what was selected; the body unchanged and None when there is nothing to select (or
    ``above`` is 0: every tool is always sent)."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not above or len(tools) <= above:
        return body, None
    if body.get("tool_choice", "auto") not in ("auto", None):
        return body, None
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    asked = stems(last_user_text(messages or []))
    called = set(_called(messages or []))
    scored = [(_shared(asked, stems(_about(tool))), i) for i, tool in enumerate(tools)]
    wanted = sorted((s, -i) for s, i in scored if s > 0)[::-1][:keep]
    kept = sorted({-i for _, i in wanted} | {i for i, t in enumerate(tools) if _name(t) in called})
    chosen = [tools[i] for i in kept]
    selection = Selection(len(tools), tuple(_name(t) for t in chosen))
    if not chosen:
        rest = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
        return rest, selection
    return {**body, "tools": chosen}, selection


def _shared(asked: set[str], about: set[str]) -> int:
    """How many of the asked words the tool's words match: equal, or one a prefix of the other
    (``time`` and ``timestamp``), from four letters on."""
    return sum(
        any(a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))
            for b in about)
        for a in asked
    )  # fmt: skip


def _about(tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(function, Mapping):
        return ""
    return f"{function.get('name') or ''} {function.get('description') or ''}"


def _name(tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    return name if isinstance(name, str) else ""


def _called(messages: Sequence[Any]) -> Iterable[str]:
    """The names of the tools the conversation has called so far."""
    for message in messages:
        if isinstance(message, Mapping):
            yield from (call.name for _, call in message_calls(message))
