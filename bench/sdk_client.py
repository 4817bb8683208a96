"""One request through the official ``openai`` SDK (async client), timed.

The cluster benchmark asks the way users' programs do. The client is built with
``max_retries=0``: a retry inside the SDK would hide the gateway's own failures and inflate
its latency. Tokens of a stream are its content chunks (llama.cpp sends one token per chunk;
``llama_cpp.server`` sends no usage), tokens of a whole answer its ``completion_tokens``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from bench.workload import SEED, Prompt

TIMEOUT = 600.0


def sdk_client(base_url: str) -> AsyncOpenAI:
    """An async client for ``base_url`` (ending in ``/v1``), without retries."""
    return AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=TIMEOUT)


@dataclass(slots=True)
class Outcome:
    """One request: monotonic start and end, first content token, tokens, who answered."""

    request_id: str
    kind: str
    started: float
    ended: float = 0.0
    first_token: float | None = None
    tokens: int = 0
    node: str = ""
    status: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


async def ask(
    client: AsyncOpenAI, model: str, prompt: Prompt, request_id: str, *, send_id: bool = True
) -> Outcome:
    """Send ``prompt``; never raises for an API error (it is recorded in the outcome).

    ``request_id`` goes out as ``x-request-id`` (the gateway logs it) unless ``send_id`` is
    false: ``llama_cpp.server`` answers 400 to any ``x-request-id`` that is not a UUID.
    """
    outcome = Outcome(request_id, prompt.kind, time.monotonic())
    headers = {"x-request-id": request_id} if send_id else {}
    try:
        await _exchange(client, model, prompt, outcome, headers)
    except openai.APIStatusError as exc:
        outcome.status = exc.status_code
        outcome.error = f"{exc.status_code}: {exc.message}"
    except openai.APIError as exc:
        outcome.error = f"{type(exc).__name__}: {exc.message}"
    finally:
        outcome.ended = time.monotonic()
    return outcome


async def _exchange(
    client: AsyncOpenAI, model: str, prompt: Prompt, outcome: Outcome, headers: dict[str, str]
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt.text}],
        max_tokens=prompt.max_tokens,
        temperature=0,
        seed=SEED,
        stream=prompt.stream,
        extra_headers=headers,
    )
    outcome.status = raw.status_code
    outcome.node = raw.headers.get("x-booagent-node", "")
    answer = raw.parse()
    if isinstance(answer, AsyncStream):
        await _count_stream(answer, outcome)
    else:
        outcome.tokens = answer.usage.completion_tokens if answer.usage else 0


async def _count_stream(stream: AsyncStream[ChatCompletionChunk], outcome: Outcome) -> None:
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                outcome.tokens += 1
                if outcome.first_token is None:
                    outcome.first_token = time.monotonic()
