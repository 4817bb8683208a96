"""The cluster benchmark's client: one SDK request, timed, streamed or whole, never raising."""

from __future__ import annotations

import asyncio

from bench.sdk_client import Outcome, ask, sdk_client
from bench.workload import Prompt
from tests.evals.test_eval_command import gateway_over
from tests.faults.upstream import FaultServer, Scenario


def _ask(base: str, prompt: Prompt) -> Outcome:
    async def main() -> Outcome:
        client = sdk_client(f"{base}/v1")
        async with client:
            return await ask(client, "booagent-cluster", prompt, "req_1")

    return asyncio.run(main())


def test_streamed_and_whole_answers_are_timed_and_counted() -> None:
    with gateway_over(FaultServer("a")) as base:
        streamed = _ask(base, Prompt("chat", "hi", stream=True, max_tokens=8))
        whole = _ask(base, Prompt("chat", "hi", stream=False, max_tokens=8))
    for outcome in (streamed, whole):
        assert outcome.ok and outcome.node == "a" and outcome.tokens > 0
        assert outcome.latency > 0
    assert streamed.ttft is not None and 0 < streamed.ttft <= streamed.latency
    assert whole.ttft is None


def test_an_api_error_is_recorded_not_raised() -> None:
    with gateway_over(FaultServer("a", Scenario.CONTEXT_LENGTH)) as base:
        outcome = _ask(base, Prompt("chat", "hi", stream=False, max_tokens=8))
    assert not outcome.ok and outcome.status == 400 and outcome.error.startswith("400")
