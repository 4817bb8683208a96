"""The mixed workload of the cluster benchmarks: chat, code and Open WebUI chores.

A fixed prompt set, interleaved so that every stretch of the cycle holds all three kinds, as
a chat front end produces them: the user's turn (chat or code, streamed) and the background
``### Task:`` requests Open WebUI sends around it (not streamed). Temperature 0 and a fixed
seed make every run ask the same questions and get answers of about the same length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEED = 1234

_CHATS = (
    "Explain in two or three sentences why the sky is blue.",
    "Give three tips for sleeping better.",
    "What is the capital of France, and what is it known for?",
    "Summarise the plot of Romeo and Juliet in a few sentences.",
)
_CODE = (
    "Write a Python function that reverses a list.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a SQL query that counts the orders of each customer.",
    "Fix this Python code: def add(a, b): return a - b",
)
_HISTORY = (
    "<chat_history>\nUSER: How do I reverse a list in Python?\n"
    "ASSISTANT: Use slicing, items[::-1], or the reversed() built-in.\n</chat_history>"
)
_CHORES = (
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history."
    f'\n### Output:\nJSON format: {{ "title": "your concise title here" }}\n{_HISTORY}',
    "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history."
    f'\n### Output:\nJSON format: {{ "tags": ["tag1", "tag2"] }}\n{_HISTORY}',
    "### Task:\nSuggest 3 relevant follow-up questions the user might ask next."
    f'\n### Output:\nJSON format: {{ "follow_ups": ["Question 1?"] }}\n{_HISTORY}',
    "### Task:\nGenerate a short web search query for the user's last question."
    f'\n### Output:\nJSON format: {{ "queries": ["query"] }}\n{_HISTORY}',
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request of the workload."""

    kind: str
    text: str
    stream: bool
    max_tokens: int

    def body(self, model: str) -> dict[str, Any]:
        """The chat completions request body."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": self.text}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "seed": SEED,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body


def mixed(max_tokens: int, chore_tokens: int = 32) -> tuple[Prompt, ...]:
    """The cycle: chat, code, chore, repeated over the four prompts of each kind."""
    cycle: list[Prompt] = []
    for chat, code, chore in zip(_CHATS, _CODE, _CHORES, strict=True):
        cycle.append(Prompt("chat", chat, True, max_tokens))
        cycle.append(Prompt("code", code, True, max_tokens))
        cycle.append(Prompt("chore", chore, False, chore_tokens))
    return tuple(cycle)


def alone_set(max_tokens: int, chore_tokens: int = 32) -> tuple[Prompt, ...]:
    """The short set each node answers alone: one prompt of each kind, all streamed (so
    every answer has a time to first token)."""
    return tuple(
        Prompt(p.kind, p.text, True, p.max_tokens) for p in mixed(max_tokens, chore_tokens)[:3]
    )
