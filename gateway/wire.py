"""OpenAI response shapes: chunks rewritten for the client.

Every chunk of one answer carries the same ``id``, the model name the client asked for (never
a node's file path), and the first delta has ``role: assistant``. A whole answer is built from
what :class:`backends.collect.Accumulator` gathered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import Chunk
from backends.collect import Accumulator

_CHUNK_FIELDS_DROPPED = ("usage", "id", "model", "created", "object")


@dataclass(frozen=True, slots=True)
class Identity:
    """What names one answer on the wire."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{secrets.token_hex(16)}")
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def client_chunk(
    identity: Identity, chunk: Chunk, *, first: bool, include_usage: bool
) -> dict[str, Any] | None:
    """The chunk as the client sees it, or None for a node's usage-only chunk."""
    choices = chunk.data.get("choices")
    if not choices:
        return None
    out = identity.head("chat.completion.chunk")
    out.update((k, v) for k, v in chunk.data.items() if k not in _CHUNK_FIELDS_DROPPED)
    if first:
        out["choices"] = [_with_role(choices[0]), *choices[1:]]
    if include_usage:
        out["usage"] = None
    return out


def _with_role(choice: Any) -> Any:
    if not isinstance(choice, Mapping):
        return choice
    delta = choice.get("delta")
    delta = delta if isinstance(delta, Mapping) else {}
    return {**choice, "delta": {"role": "assistant", **delta}}


def usage_chunk(identity: Identity, usage: Mapping[str, int]) -> dict[str, Any]:
    return {**identity.head("chat.completion.chunk"), "choices": [], "usage": dict(usage)}


def completion(identity: Identity, acc: Accumulator, usage: Mapping[str, int]) -> dict[str, Any]:
    """The whole ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": acc.text}
    if acc.reasoning:
        message["reasoning_content"] = "".join(acc.reasoning)
    if acc.tool_calls:
        message["tool_calls"] = acc.calls()
        message["content"] = acc.text or None
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": acc.finish_reason or "stop",
        "logprobs": {"content": acc.logprobs} if acc.logprobs else None,
    }
    body = {**identity.head("chat.completion"), "choices": [choice], "usage": dict(usage)}
    if acc.timings:
        body["timings"] = acc.timings
    return body
