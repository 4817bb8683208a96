"""An OpenAI SDK agent with two function tools, against real nodes of both kinds.

The Qwen2.5-Coder 1.5B model (the member the default cluster gives tool turns) runs once on
``llama_cpp.server`` (which writes calls as text for
``auto`` and repeats the name in streamed deltas for a named choice) and once on native
``llama-server --jinja``. Whatever the node does, the client must get OpenAI tool calls: stable
``call_`` ids, the name once, arguments that parse and validate, ``finish_reason:
"tool_calls"``, ``content: null`` when the answer is only calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tests.e2e.conftest import SMOL, STRONG, Cluster, start_cluster, stop_cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CONVERT = {
    "type": "function",
    "function": {
        "name": "convert_currency",
        "description": "Convert an amount of money from one currency to another.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number"},
                "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
                "to_currency": {"type": "string", "description": "ISO code, e.g. EUR"},
            },
            "required": ["amount", "from_currency", "to_currency"],
        },
    },
}
TOOLS = [WEATHER, CONVERT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
SAMPLING = {"temperature": 0, "seed": 7, "max_tokens": 200}


@pytest.fixture(scope="module", params=["llama_cpp_server", "llama_server"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The coder on one node kind, and SmolLM2 (no tools) beside it."""
    native = frozenset({"coder-1"}) if request.param == "llama_server" else frozenset()
    started = start_cluster(
        [("coder-1", STRONG), ("smol-1", SMOL)], tmp_path_factory.mktemp("tools"), native=native
    )
    yield started
    stop_cluster(started)


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with (
        running_gateway(cluster.settings()) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=300) as sdk,
    ):
        yield sdk


def ask(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> Any:
    return client.chat.completions.create(
        model=STRONG,
        messages=messages,
        tools=TOOLS,
        **SAMPLING,
        **extra,  # type: ignore[arg-type]
    )


def stream(client: openai.OpenAI, messages: list[dict[str, Any]], **extra: Any) -> Any:
    """A streamed answer, rebuilt exactly as the SDK's own helper rebuilds it."""
    state = ChatCompletionStreamState()
    deltas: list[Any] = []
    for chunk in client.chat.completions.create(
        model=STRONG,
        messages=messages,
        tools=TOOLS,
        stream=True,
        **SAMPLING,
        **extra,  # type: ignore[arg-type]
    ):
        state.handle_chunk(chunk)
        deltas += [t for c in chunk.choices for t in (c.delta.tool_calls or [])]
    return state.get_final_completion(), deltas


def assert_valid_calls(message: Any, names: set[str]) -> list[Any]:
    """Each call is OpenAI-shaped, names an offered tool and has arguments its schema takes."""
    calls = message.tool_calls or []
    assert calls, f"no tool call; content: {message.content!r}"
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    assert len({c.id for c in calls}) == len(calls)
    return list(calls)


WEATHER_Q = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
MONEY_Q = [{"role": "user", "content": "How many euros do I get for 250 US dollars?"}]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_auto_picks_the_tool_the_question_needs(client: openai.OpenAI, streamed: bool) -> None:
    answer = stream(client, WEATHER_Q)[0] if streamed else ask(client, WEATHER_Q)
    choice = answer.choices[0]
    (call,) = assert_valid_calls(choice.message, {"get_weather"})
    assert "paris" in json.loads(call.function.arguments)["city"].lower()
    assert choice.finish_reason == "tool_calls" and not choice.message.content


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_named_function_is_called_and_named_once(client: openai.OpenAI, streamed: bool) -> None:
    """A named choice gives that call; in a stream its name comes once, in the first delta."""
    named = {"type": "function", "function": {"name": "convert_currency"}}
    if streamed:
        answer, deltas = stream(client, MONEY_Q, tool_choice=named)
        assert [d.function.name for d in deltas if d.function and d.function.name] == [
            "convert_currency"
        ]
    else:
        answer = ask(client, MONEY_Q, tool_choice=named)
    (call,) = assert_valid_calls(answer.choices[0].message, {"convert_currency"})
    arguments = json.loads(call.function.arguments)
    assert arguments["amount"] == 250
    assert answer.choices[0].finish_reason == "tool_calls"


def test_required_forces_a_call_on_a_question_that_needs_none(client: openai.OpenAI) -> None:
    hello = [{"role": "user", "content": "Hi there, how are you today?"}]
    answer = ask(client, hello, tool_choice="required")
    assert_valid_calls(answer.choices[0].message, {"get_weather", "convert_currency"})


def test_none_answers_in_text(client: openai.OpenAI) -> None:
    answer = ask(client, WEATHER_Q, tool_choice="none")
    message = answer.choices[0].message
    assert not message.tool_calls and message.content
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_several_calls_at_once(client: openai.OpenAI) -> None:
    """Asked for two cities with a call required, the answer calls the tool for both."""
    two = [{"role": "user", "content": "Get the current weather in Paris and in Tokyo."}]
    answer = ask(client, two, tool_choice="required")
    calls = assert_valid_calls(answer.choices[0].message, {"get_weather"})
    cities = {json.loads(c.function.arguments)["city"].lower() for c in calls}
    assert {"paris", "tokyo"} <= {c.split(",")[0].strip() for c in cities}


def test_a_three_turn_agent_loop_with_tool_results(client: openai.OpenAI) -> None:
    """Turn 1: a question, a call (auto). Turn 2: its result, and an answer in words that
    uses it (tools still offered: a repeat of the answered call is asked again for words).
    Turn 3: a new request, a call the agent requires, its result, the answer that uses it."""
    messages: list[dict[str, Any]] = list(WEATHER_Q)
    first = ask(client, messages).choices[0].message
    (call,) = assert_valid_calls(first, {"get_weather"})
    weather = json.dumps({"city": "Paris", "temperature_c": 17, "sky": "cloudy"})
    messages += [first.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": weather}]  # fmt: skip
    told = ask(client, messages).choices[0].message
    assert not told.tool_calls and told.content and "17" in told.content
    messages += [{"role": "assistant", "content": told.content},
                 {"role": "user", "content": "Thanks. Now convert 250 USD to EUR."}]  # fmt: skip
    second = ask(client, messages, tool_choice="required").choices[0].message
    (money,) = assert_valid_calls(second, {"convert_currency"})
    assert json.loads(money.function.arguments)["amount"] == 250
    converted = json.dumps({"amount": 231.5, "currency": "EUR"})
    messages += [second.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": money.id, "content": converted}]  # fmt: skip
    final = ask(client, messages).choices[0].message
    assert not final.tool_calls and final.content and "231" in final.content


def test_the_virtual_model_sends_tool_turns_to_a_member_that_calls_tools(
    client: openai.OpenAI,
) -> None:
    """Through booagent-cluster the turn goes to the coder (SmolLM2's template has no tools)."""
    raw = client.chat.completions.with_raw_response.create(
        model="booagent-cluster",
        messages=WEATHER_Q,
        tools=TOOLS,
        **SAMPLING,  # type: ignore[arg-type]
    )
    answer = raw.parse()
    assert raw.headers["x-booagent-node"] == "coder-1"
    assert_valid_calls(answer.choices[0].message, {"get_weather"})
