"""Assembling a node's answer from its chunks: text, tool calls, finish reason, usage.

What the client sees is built from it by ``gateway.wire``.

When a node sends no usage, completion tokens are counted from the content chunks (llama.cpp
sends one token per chunk) and prompt tokens are estimated from the prompt's length (about 4
characters per token).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import Chunk


def estimate_prompt_tokens(messages: Any, tools: Any = None) -> int:
    """About 4 characters a token plus a few tokens of chat template per message (and the
    tools' definitions, which the template writes into the prompt)."""
    if not isinstance(messages, list):
        return 0
    chars = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, Mapping))
    if isinstance(tools, list) and tools:
        chars += len(json.dumps(tools))
    return chars // 4 + 4 * len(messages)


@dataclass(slots=True)
class Accumulator:
    """Follows an answer chunk by chunk: text, tool calls, finish reason, usage."""

    prompt_estimate: int = 0
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    content_chunks: int = 0
    node_usage: Mapping[str, Any] | None = None
    timings: Mapping[str, Any] | None = None

    def add(self, chunk: Chunk) -> None:
        self.content_chunks += chunk.is_content
        self.node_usage = chunk.usage or self.node_usage
        timings = chunk.data.get("timings")
        self.timings = timings if isinstance(timings, Mapping) else self.timings
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self._add_delta(chunk.delta, chunk.choice.get("logprobs"))

    def _add_delta(self, delta: Mapping[str, Any], logprobs: Any) -> None:
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("reasoning_content"), str):
            self.reasoning.append(delta["reasoning_content"])
        for call in delta.get("tool_calls") or []:
            self._add_tool_call(call)
        if isinstance(logprobs, Mapping) and isinstance(logprobs.get("content"), list):
            self.logprobs.extend(logprobs["content"])

    def _add_tool_call(self, call: Mapping[str, Any]) -> None:
        slot = self.tool_calls.setdefault(
            int(call.get("index", 0)),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""

    @property
    def text(self) -> str:
        return "".join(self.content)

    def usage(self) -> dict[str, int]:
        """The node's own usage when it sent one, else counted and estimated."""
        node = self.node_usage or {}
        prompt = node.get("prompt_tokens")
        completion = node.get("completion_tokens")
        prompt = prompt if isinstance(prompt, int) else self.prompt_estimate
        completion = completion if isinstance(completion, int) else self.content_chunks
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def calls(self) -> list[dict[str, Any]]:
        """The tool calls, in index order."""
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]
