"""Asking a model through the gateway's HTTP API with the official `openai` SDK.

This is the path users take: ``POST /v1/chat/completions`` (not streamed) with an item's
request body (one user message; a tool item adds its ``tools``, ``tool_choice`` and the turns
after the prompt), explicit ``temperature`` and ``seed`` (llama.cpp's defaults differ from
OpenAI's). The answer keeps its text and its tool calls. SDK errors are translated here, once,
into :class:`AskError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import openai
from openai.types.chat import ChatCompletionMessageToolCallUnion

from evals.cache import Answer, ToolCall


@dataclass(frozen=True, slots=True)
class Sampling:
    """The request settings that, with the prompt, determine an answer."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 1234

    @property
    def cap(self) -> int | openai.Omit:
        """``max_tokens`` as the request sends it: 0 sends none (the answer is uncapped)."""
        return self.max_tokens if self.max_tokens > 0 else openai.omit


class AskError(Exception):
    """A request that got no answer (HTTP error, timeout, unreachable gateway)."""

    def __init__(self, message: str, latency: float = 0.0) -> None:
        super().__init__(message)
        self.message, self.latency = message, latency


def api_base(url: str) -> str:
    """``http://host:port`` or ``.../v1`` (trailing slash or not) -> ``.../v1``."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class Asker:
    """An SDK client for one gateway; an async context manager that closes its connections."""

    def __init__(
        self, url: str, *, api_key: str = "unused", timeout: float = 300.0, retries: int = 1
    ) -> None:
        self.base_url = api_base(url)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=retries
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()

    async def models(self) -> list[str]:
        """Model ids from ``GET /v1/models``, in the gateway's order."""
        try:
            page = await self._client.models.list()
        except openai.APIError as exc:
            raise AskError(f"cannot list models at {self.base_url}: {exc}") from exc
        return [model.id for model in page.data]

    async def ask(self, model: str, body: Mapping[str, Any], sampling: Sampling) -> Answer:
        """Ask ``model`` once with ``body`` (``messages``, and ``tools`` and ``tool_choice``
        when given; see ``Item.body``); raises :class:`AskError` when there is no answer."""
        started = time.perf_counter()
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=model,
                messages=body["messages"],
                tools=body.get("tools", openai.omit),
                tool_choice=body.get("tool_choice", openai.omit),
                max_tokens=sampling.cap,
                temperature=sampling.temperature,
                seed=sampling.seed,
            )
            completion = raw.parse()
        except openai.APIError as exc:
            raise AskError(str(exc), time.perf_counter() - started) from exc
        latency = time.perf_counter() - started
        choice = completion.choices[0] if completion.choices else None
        usage = completion.usage.model_dump(include=_USAGE_FIELDS) if completion.usage else None
        return Answer(
            text=(choice.message.content or "") if choice else "",
            latency=latency,
            usage=usage,
            node=raw.headers.get("x-booagent-node"),
            strategy=raw.headers.get("x-booagent-strategy"),
            metadata=_metadata(completion.model_extra),
            finish_reason=choice.finish_reason if choice else None,
            tool_calls=_tool_calls(choice.message.tool_calls or ()) if choice else (),
        )


_USAGE_FIELDS = {"prompt_tokens", "completion_tokens", "total_tokens"}


def _tool_calls(calls: Sequence[ChatCompletionMessageToolCallUnion]) -> tuple[ToolCall, ...]:
    """Function calls as name and arguments text (a custom tool's input stands as arguments)."""
    return tuple(
        ToolCall(c.function.name, c.function.arguments)
        if c.type == "function"
        else ToolCall(c.custom.name, c.custom.input)
        for c in calls
    )


def _metadata(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    value = (extra or {}).get("booagent")
    return value if isinstance(value, dict) else None
