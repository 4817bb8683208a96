"""A real agent framework as the client: the OpenAI Agents SDK runs a two-tool task to the end.

The framework drives its own loop through ``booagent-cluster`` with the Chat Completions API
(the way it talks to any OpenAI-compatible server): it sends the tools, runs the calls the
model makes with its own function tools, sends their results back, and stops at an answer in
words. Nothing here reaches the internet (tracing is off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.e2e.conftest import SMOL, STRONG, Cluster, start_cluster, stop_cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster: Cluster = start_cluster(
        [("coder-1", STRONG), ("smol-1", SMOL)], tmp_path_factory.mktemp("agents")
    )
    try:
        with running_gateway(cluster.settings()) as url:
            yield url
    finally:
        stop_cluster(cluster)


def test_an_agents_sdk_agent_completes_a_two_tool_task(base: str) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(f"get_weather:{city}")
        return f"{city}: 17 degrees Celsius, cloudy"

    @function_tool
    def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
        """Convert an amount of money from one currency to another (ISO codes)."""
        calls.append(f"convert_currency:{amount}:{from_currency}:{to_currency}")
        return f"{amount} {from_currency} is 231.50 {to_currency}"

    async def run() -> str:
        set_tracing_disabled(True)
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=300)
        model = OpenAIChatCompletionsModel(model="booagent-cluster", openai_client=client)
        agent = Agent(
            name="assistant",
            instructions="Answer with the tools: look the weather up, convert money with the "
            "converter, then tell the user both results.",
            tools=[get_weather, convert_currency],
            model=model,
            model_settings=ModelSettings(temperature=0, tool_choice="required"),
            reset_tool_choice=True,
        )
        try:
            result = await Runner.run(
                agent, "What is the weather in Paris? Also convert 250 USD to EUR.", max_turns=6
            )
        finally:
            await client.close()
        return str(result.final_output)

    answer = asyncio.run(run())
    assert any(c.startswith("get_weather:") and "paris" in c.lower() for c in calls), calls
    assert any(c.startswith("convert_currency:250") for c in calls), calls
    assert "17" in answer and "231" in answer, answer
