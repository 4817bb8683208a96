"""What kind of work a chat request is: code, a chore, structured output, math, or chat.

Chores are the helper requests chat front ends send around each answer (Open WebUI starts
their user message with ``### Task:``: titles, tags, follow-ups, search queries). Code is
recognised by code blocks, code-like lines or programming vocabulary in the user's message.
Structured requests ask for a checkable format (JSON, exactly N words or items). Tools do not
change a request's kind, even with a call forced: the nodes' grammar makes any forced call
valid, so a validity check (the cascade's) cannot judge it, and the test split showed the
cascade accept the cheap member's valid call to the wrong tool. Math requests are word
problems with numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from ensemble.instructions import instruction_checks


class Kind(StrEnum):
    CODE = "code"
    CHORE = "chore"
    STRUCTURED = "structured"
    MATH = "math"
    GENERAL = "general"


_CHORE = re.compile(r"^\s*###\s*Task:", re.IGNORECASE)
_FENCE = re.compile(r"```")
# Linear time on any text (a prompt is untrusted input): the call-line alternative is tried
# from line starts only, and nothing scans a run of whitespace twice.
_CODE_LINE = re.compile(
    r"^[^\S\n]*(def |class |import |from \S+ import |#include|function |const |let |var |"
    r"public |fn |SELECT |for\s*\(|if\s*\(|return\b).*$|[;{}]\s*$|=>|::|"
    r"^(?=[^\n]*\w\()[^\n]*\)(?>\s*[:{])?[^\S\n]*$",
    re.MULTILINE,
)
_STRONG = re.compile(
    r"\b(python|javascript|typescript|rust|golang|kotlin|c\+\+|sql|regex|regular expression|"
    r"bash|powershell|traceback|stack trace|compiler|refactor|unit tests?|code|coding|"
    r"programming|script|debug|syntax error|numpy|pandas|dataframe|algorithm|json schema|"
    r"segfault|null pointer|function (?:that|to|which|named|called)|"
    r"(?:write|implement|define|create) an? (?:function|class|method|program))\b",
    re.IGNORECASE,
)
_WEAK = re.compile(
    r"\b(function|class|method|variable|loop|array|string|integer|recursion|recursive|"
    r"dictionary|implement|bug|library|package|program|compile|api|query|parse)\b",
    re.IGNORECASE,
)
_STRUCTURED = re.compile(
    r"\bjson\b|\bexactly (?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)\b|"
    r"\bexactly \w+ (?:words?|items?|bullet|lines?|sentences?)|\ball (?:in )?"
    r"(?:lower|upper)case\b|\b(?:numbered|bulleted) list\b|\bcomma-separated\b",
    re.IGNORECASE,
)
_MATH = re.compile(
    r"\b(how many|how much|total|sum|difference|product|percent|average|each|per|remain(?:s|ing)?|"
    r"left|altogether|twice|half|times|cost|costs|calculate|compute|area|perimeter|volume|"
    r"ratio|discount|interest|speed)\b|"
    r"\d\s*[+*/x\u00d7\u00f7=%]\s*\d|\d\s+-\s+\d|\d\s*%",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d")
_REFERS_BACK = re.compile(
    r"^\W*(?:now\W+)?(?:add|make|change|fix|rewrite|rename|refactor|explain|optimi[sz]e|"
    r"improve|convert|extend|remove|update|simplify|test)\b|\b(?:it|this|that|these|them)\b",
    re.IGNORECASE,
)
_FOLLOW_UP = 300
"""Characters up to which a user message can be a follow-up read in the light of the answer
before it."""
WINDOW = 16_000
"""Characters read from each end of the message: enough to judge it, and a bound on the time
the event loop spends on a prompt of any size (a few MB would otherwise block it for seconds)."""


def classify(body: Mapping[str, Any]) -> Kind:
    """The kind of the request, judged mostly on its last user message."""
    messages = body.get("messages") or []
    last_user = _window(last_user_text(messages))
    if _CHORE.match(last_user):
        return Kind.CHORE
    if _looks_like_code(last_user) or _follows_code(messages, last_user):
        return Kind.CODE
    if body.get("response_format") or _structured(last_user):
        return Kind.STRUCTURED
    if len(_DIGITS.findall(last_user)) >= 2 and _MATH.search(last_user):
        return Kind.MATH
    return Kind.GENERAL


def _structured(text: str) -> bool:
    return bool(_STRUCTURED.search(text) or instruction_checks(text))


def _looks_like_code(text: str) -> bool:
    """Code fences, two code-like lines, one strong programming word, or three weak ones."""
    if _FENCE.search(text) or len(_CODE_LINE.findall(text)) >= 2:
        return True
    return bool(_STRONG.search(text)) or len({w.lower() for w in _WEAK.findall(text)}) >= 3


def _follows_code(messages: Sequence[Any], last_user: str) -> bool:
    """A short follow-up that refers back ("now add tests for it", "make it faster") to an
    answer that held code."""
    if len(last_user) > _FOLLOW_UP or not isinstance(messages, list):
        return False
    if not _REFERS_BACK.search(last_user):
        return False
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return bool(_FENCE.search(_window(message_text(message.get("content")))))
    return False


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last user message (parts of a multi-part message joined)."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def with_last_user(messages: Sequence[Any], edit: Callable[[Any], Any]) -> list[Any]:
    """The messages with the last user message's content replaced by ``edit(content)``."""
    edited = list(messages)
    for index in range(len(edited) - 1, -1, -1):
        message = edited[index]
        if isinstance(message, Mapping) and message.get("role") == "user":
            edited[index] = {**message, "content": edit(message.get("content"))}
            break
    return edited


def _window(text: str) -> str:
    if len(text) <= 2 * WINDOW:
        return text
    return f"{text[:WINDOW]}\n{text[-WINDOW:]}"


def message_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return ""
