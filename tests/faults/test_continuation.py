"""A node that breaks its stream mid-answer, seen from an `openai` SDK client: the answer goes
on on another node of the same member, and the client reads one whole answer.

Node ``a`` (the better priority tier, so it answers first) breaks its stream after three
words; ``b`` serves the same member. As a native llama-server (``/health`` 200) ``b`` is asked
with the answer so far as a final assistant message; as ``llama_cpp.server`` (``/health``
404) it is asked on ``/v1/completions`` with the prompt the member's chat template makes
(rendered from the SmolLM2 GGUF in the models cache) followed by the answer so far.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import openai
import pytest

from backends.models import default_cache_dir, lookup
from tests.faults.test_gateway_faults import POLICIES
from tests.faults.upstream import ANSWER_MARK, FaultServer, Scenario
from tests.harness import make_settings, running_gateway

TEXT = "the moon is a rock that circles the earth"
ASK = [{"role": "user", "content": "Tell me about the moon."}]


def _twins(a: FaultServer, b: FaultServer, model: str | None = None) -> Any:
    member = {"name": "m", "n_ctx": 2048, **({"model": model} if model else {})}
    return make_settings(
        members=[member],
        nodes=[
            {"name": "a", "member": "m", "url": a.url, "priority": 0},
            {"name": "b", "member": "m", "url": b.url, "priority": 1},
        ],
        routes={"general": ["m"], "code": ["m"], "chore": ["m"]},
        policies=POLICIES,
    )


@contextmanager
def twins(
    scenario: Scenario, *, native: bool = True, model: str | None = None
) -> Iterator[tuple[openai.OpenAI, FaultServer, FaultServer]]:
    a = FaultServer("a", scenario, fault_after=3, token_interval=0.02)
    b = FaultServer("b", token_interval=0.02)
    a.text = b.text = TEXT
    if not native:
        b.health_status = 404  # what llama_cpp.server answers to GET /health
    with ExitStack() as stack:
        for node in (a, b):
            stack.enter_context(node.in_thread())
        base = stack.enter_context(running_gateway(_twins(a, b, model)))
        sdk = stack.enter_context(
            openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=30)
        )
        yield sdk, a, b


def read(sdk: openai.OpenAI, **extra: Any) -> tuple[str, list[Any], Any]:
    """Stream an answer with the SDK: its text, its chunks, and the response headers."""
    raw = sdk.chat.completions.with_raw_response.create(
        model="m", messages=ASK, stream=True, **extra
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, raw.headers


@pytest.mark.parametrize(
    "scenario", [Scenario.CUT, Scenario.STALL, Scenario.MALFORMED, Scenario.ERROR_FRAME]
)
def test_a_broken_stream_goes_on_on_a_native_sibling(scenario: Scenario) -> None:
    """Cut, stalled, malformed or failed after three words: the SDK reads the whole answer
    once, with one id, and the last chunk's booagent object says where it went on."""
    with twins(scenario) as (sdk, a, b):
        text, chunks, headers = read(sdk)
    assert text == TEXT
    assert len({c.id for c in chunks}) == 1 and chunks[-1].choices[0].finish_reason == "stop"
    assert headers["x-booagent-node"] == "a"
    record = chunks[-1].model_extra["booagent"]
    reason = "timeout" if scenario is Scenario.STALL else record["continued"][0]["reason"]
    assert record["continued"] == [
        {"from": "a", "to": "b", "after_chars": len("the moon is"), "reason": reason}
    ]
    assert record["calls"][0]["attempts"] == 2
    assert (a.requests, b.requests) == (1, 1)
    assert b.last_body is not None
    assert b.last_body["messages"][-1] == {"role": "assistant", "content": "the moon is"}


def test_usage_counts_both_nodes_tokens() -> None:
    with twins(Scenario.CUT) as (sdk, _, _):
        _, chunks, _ = read(sdk, stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(TEXT.split())


def test_a_cut_stream_goes_on_on_llama_cpp_server_with_the_members_template() -> None:
    model = default_cache_dir(os.environ) / lookup("smollm2-135m").filename
    if not model.exists():
        pytest.skip(f"{model} is missing: run `make setup` (booagent models pull)")
    with twins(Scenario.CUT, native=False, model="smollm2-135m") as (sdk, _, b):
        text, chunks, _ = read(sdk)
    assert text == TEXT
    assert chunks[-1].model_extra["booagent"]["continued"][0]["to"] == "b"
    (record,) = b.records
    assert record.path == "/v1/completions" and record.body is not None
    prompt = record.body["prompt"]
    assert prompt.startswith("<|im_start|>system\n") and "Tell me about the moon." in prompt
    assert prompt.endswith(ANSWER_MARK + "the moon is")
    assert "<|im_end|>" in record.body["stop"]


def test_an_answer_that_may_be_a_tool_call_ends_with_the_error_frame() -> None:
    """With tools offered nothing is continued: the SDK raises, b is never asked."""
    tools = [{"type": "function", "function": {"name": "look_up", "parameters": {}}}]
    with twins(Scenario.CUT) as (sdk, _, b), pytest.raises(openai.APIError) as caught:
        read(sdk, tools=tools, tool_choice="none")
    assert "failed after the answer began" in str(caught.value)
    assert b.requests == 0
