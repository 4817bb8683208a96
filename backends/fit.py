"""Fitting a request to a member's context: how many tokens its prompt takes there.

The prompt is what the node's chat template makes of the messages *and the tools* (Open WebUI
sends 36 tool definitions, about 25 KB, with every turn: 6,623 tokens on the Qwen coders).
Counting it takes the member's own tokenizer and template:

- :class:`LocalVocab`: the member's GGUF file on this machine, loaded vocabulary-only by
  ``llama-cpp-python`` and its template rendered as ``llama_cpp.server`` renders it (the
  ``node`` extra; about 0.9 s to load, 0.5 ms to render and 25-50 ms to tokenize 26 KB, off the
  event loop). Measured against a node's own count: equal.
- :class:`NativeCount`: a native ``llama-server`` of the member renders and tokenizes it
  itself (``/v1/chat/completions/input_tokens``: no slot taken).
- :class:`Estimate`: neither at hand (a remote ``llama_cpp.server`` node whose model file is
  elsewhere): about 3 characters a token, which errs on the long side.

``llama_cpp.server``'s own ``/extras/tokenize`` is not used: it takes the model's lock, so it
waits behind a running answer (docs/performance.md has the figures).

A count is needed only when the prompt might not fit: a prompt's tokens never exceed its bytes,
so a request whose bytes (plus the template's own text and the answer's room) fit is not
counted at all (:func:`bound`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from backends.continuation import Prompt
from backends.errors import PromptTooLong

TEMPLATE_ALLOWANCE = 2048
"""Bytes a chat template may add around the messages and tools (role markers, tool preamble)."""


class Counter(Protocol):
    """Counts the tokens of a request's prompt on one member."""

    async def count(self, body: Mapping[str, Any]) -> int: ...


def _prompt_parts(body: Mapping[str, Any]) -> tuple[list[Any], Any]:
    messages = body.get("messages")
    return (messages if isinstance(messages, list) else []), body.get("tools")


def bound(body: Mapping[str, Any]) -> int:
    """An upper bound on the prompt's tokens on any member: its bytes plus the template's."""
    messages, tools = _prompt_parts(body)
    try:
        size = len(msgspec.json.encode([messages, tools]))
    except (TypeError, msgspec.EncodeError):
        size = len(json.dumps([messages, tools], ensure_ascii=False, default=str).encode())
    return size + TEMPLATE_ALLOWANCE


@dataclass(frozen=True, slots=True)
class Estimate:
    """About ``chars_per_token`` characters a token, plus a few tokens of template per message
    (and the tools as JSON)."""

    chars_per_token: float = 3.0

    async def count(self, body: Mapping[str, Any]) -> int:
        messages, tools = _prompt_parts(body)
        chars = len(json.dumps([messages, tools], ensure_ascii=False))
        return int(chars / self.chars_per_token) + 8 * len(messages) + 16


@dataclass(slots=True)
class LocalVocab:
    """The member's GGUF vocabulary and chat template, loaded on first use. ``prepare`` turns
    a request into what ``llama_cpp.server`` renders for this member (its tools and earlier
    calls written as the node is asked: :mod:`backends.tooling`). A prompt the template cannot
    render is estimated (the node will say what is wrong with it), and so is every prompt
    when the vocabulary cannot be loaded. The same template renders the prompt that
    ``llama_cpp.server`` is asked to continue an answer from (:mod:`backends.continuation`)."""

    path: Path
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda body: body
    _loaded: _Vocab | None = None
    _failed: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def count(self, body: Mapping[str, Any]) -> int:
        vocab = await self._vocab()
        try:
            if vocab is None:
                raise LookupError("the vocabulary could not be loaded")
            return int(await asyncio.to_thread(vocab.count, self.prepare(body)))
        except Exception:  # a template error is the request's, for the node to report
            return await ESTIMATE.count(body)

    async def chat_prompt(self, body: Mapping[str, Any]) -> Prompt | None:
        """The conversation of ``body`` as ``llama_cpp.server`` renders it for this member, up
        to where the answer begins; None when it cannot be rendered here."""
        vocab = await self._vocab()
        if vocab is None:
            return None
        try:
            return await asyncio.to_thread(vocab.prompt, self.prepare(body))
        except Exception:  # a template error: the node could not render it either
            return None

    async def _vocab(self) -> _Vocab | None:
        async with self._lock:
            if self._loaded is None and not self._failed:
                try:
                    self._loaded = await asyncio.to_thread(_Vocab.load, self.path)
                except (ImportError, OSError, ValueError):  # a broken install or model file
                    self._failed = True
        return self._loaded


@dataclass(frozen=True, slots=True)
class _Vocab:
    """A GGUF's vocabulary (loaded without its weights) and its chat template."""

    llama: Any
    formatter: Any

    @classmethod
    def load(cls, path: Path) -> _Vocab:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = llama.metadata.get("tokenizer.chat_template", "")
        eos = llama._model.token_get_text(llama.token_eos())
        bos = llama._model.token_get_text(llama.token_bos()) if llama.token_bos() >= 0 else ""
        return cls(llama, Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos))

    def _render(self, body: Mapping[str, Any]) -> Any:
        messages, tools = _prompt_parts(body)
        return self.formatter(messages=messages, tools=tools, tool_choice=body.get("tool_choice"))

    def count(self, body: Mapping[str, Any]) -> int:
        """The prompt's tokens: its template rendered, then tokenized."""
        prompt = self._render(body).prompt
        return len(self.llama.tokenize(prompt.encode(), add_bos=False, special=True))

    def prompt(self, body: Mapping[str, Any]) -> Prompt:
        rendered = self._render(body)
        stop = rendered.stop
        return Prompt(rendered.prompt, (stop,) if isinstance(stop, str) else tuple(stop or ()))


def local_vocab(
    path: Path, prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> LocalVocab | None:
    """A :class:`LocalVocab` when the file is here and ``llama-cpp-python`` is installed
    (looked up, not imported: importing it takes a third of a second, paid on first use)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    return LocalVocab(path, prepare) if path.is_file() else None


@dataclass(frozen=True, slots=True)
class NativeCount:
    """Asks a native ``llama-server`` node of the member (``ask`` is its
    ``/v1/chat/completions/input_tokens`` call); estimates when the node cannot say."""

    ask: Callable[[Mapping[str, Any]], Awaitable[int | None]]

    async def count(self, body: Mapping[str, Any]) -> int:
        counted = await self.ask(body)
        return counted if counted is not None else await ESTIMATE.count(body)


MIN_ANSWER = 256
"""Tokens of answer a member's context must still hold after the prompt for it to be asked
(fewer when the request asks for fewer with ``max_tokens``)."""


@dataclass(frozen=True, slots=True)
class Fitted:
    """Where a request fits: the members whose context holds its prompt (in the order asked),
    the tokens each leaves for the answer (for members that were counted), and the members
    passed over because their context could not hold it (those preferred to the first that
    fits; the request moved away from them), with why."""

    members: tuple[str, ...]
    room: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    prompt: Mapping[str, int] = field(default_factory=dict)
    estimate: int = 0

    def prompt_tokens(self, member: str) -> int:
        """The prompt's tokens on ``member``: counted when it was, else estimated."""
        return self.prompt.get(member, self.estimate)

    def body_for(self, body: Mapping[str, Any], member: str) -> Mapping[str, Any]:
        """``body`` with ``max_tokens`` clamped to what is left of ``member``'s context."""
        room = self.room.get(member)
        asked = body.get("max_tokens")
        if room is None or not isinstance(asked, int) or asked <= room:
            return body
        return {**body, "max_tokens": max(1, room)}


@dataclass(frozen=True, slots=True)
class Fitter:
    """Fits requests to members' contexts (``n_ctx`` per member; ``counter_for`` gives the
    counter to use for a member now)."""

    contexts: Mapping[str, int]
    counter_for: Callable[[str], Counter]

    async def fit(self, body: Mapping[str, Any], members: tuple[str, ...]) -> Fitted:
        """``members`` (every member when empty) whose context holds the prompt and some answer;
        :class:`backends.errors.PromptTooLong` when none does. Members without a node here
        are left to the pool."""
        wanted = tuple(m for m in members or self.contexts if m in self.contexts)
        if not wanted:  # no node carries any of them: the pool says so
            return Fitted(members)
        asked = body.get("max_tokens")
        reserve = min(asked, MIN_ANSWER) if isinstance(asked, int) else MIN_ANSWER
        whole = asked if isinstance(asked, int) else reserve
        size = bound(body)
        if size + whole <= min(self.contexts[m] for m in wanted):
            # surely fits, with all the answer asked for
            return Fitted(members, estimate=(size - TEMPLATE_ALLOWANCE) // 4)
        counted = {m: await self._count(body, m) for m in wanted}
        room = {m: self.contexts[m] - counted[m] for m in wanted}
        fits = tuple(m for m in wanted if room[m] >= reserve)
        ahead = wanted[: wanted.index(fits[0])] if fits else wanted
        skipped = tuple(_why(m, counted[m], self.contexts[m]) for m in ahead)
        if not fits:
            raise PromptTooLong(
                "the prompt does not fit the context of any member that may answer it, with "
                f"{reserve} tokens left for the answer: {'; '.join(skipped)}",
                param="messages",
            )
        return Fitted(fits if members or skipped else (), room, skipped, counted)

    async def _count(self, body: Mapping[str, Any], member: str) -> int:
        return await self.counter_for(member).count(body)


ESTIMATE = Estimate()


def _why(member: str, prompt: int, n_ctx: int) -> str:
    return f"{member}: prompt {prompt} tokens, context {n_ctx}"
