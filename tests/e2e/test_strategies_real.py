"""Each strategy over real nodes, streaming and not, through the `openai` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import DEFAULT_CONFIG, load_settings
from tests.e2e.conftest import CODER, SMOL, Cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e

CODE = [{"role": "user", "content": "Write a Python function `double(x)` returning x * 2."}]
MATH = [{"role": "user", "content": "What is 12 + 30? Answer with the number only."}]


@pytest.fixture(scope="module")
def base(real_cluster: Cluster) -> Iterator[str]:
    packaged = load_settings(DEFAULT_CONFIG, environ={})
    strategies = {
        "auto": packaged.strategies.auto,  # the table `make up` serves
        "keepalive_seconds": 0.2,
        "program": {"members": [CODER]},
        "tested": {"members": [CODER], "test_writer": CODER, "test_tokens": 160},
    }
    with running_gateway(real_cluster.settings(strategies)) as url:
        yield url


@pytest.fixture
def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.mark.parametrize("strategy", ["route", "cascade", "ensemble", "program"])
def test_whole_answer_carries_booagent_metadata(client: openai.OpenAI, strategy: str) -> None:
    """A non-streaming answer names the strategy, the calls made, and sums their usage."""
    done = client.chat.completions.create(
        model=f"booagent-cluster:{strategy}", messages=MATH, max_tokens=24, temperature=0
    )
    meta = done.model_extra["booagent"]  # type: ignore[index]
    assert meta["strategy"] == strategy
    assert meta["calls"] and all(c["member"] in (SMOL, CODER) for c in meta["calls"])
    assert done.choices[0].message.content
    spent = sum(c["tokens"] for c in meta["calls"])
    assert done.usage is not None and done.usage.completion_tokens == spent


@pytest.mark.parametrize("strategy", ["cascade", "ensemble", "program"])
def test_stream_has_keepalives_then_answer_then_metadata(base: str, strategy: str) -> None:
    """While members work the stream carries SSE comments; the last chunk carries `booagent`."""
    body = {
        "model": f"booagent-cluster:{strategy}",
        "messages": CODE,
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert any(line.startswith(":") for line in lines), "keep-alive comments while waiting"
    data = [line for line in lines if line.startswith("data:")]
    assert data[-1] == "data: [DONE]"
    assert '"booagent"' in data[-2] and '"usage"' in data[-2]


def test_sdk_stream_through_ensemble(client: openai.OpenAI) -> None:
    """The SDK reads an ensemble stream as a normal stream (comments are ignored)."""
    chunks = list(
        client.chat.completions.create(
            model="booagent-cluster:ensemble", messages=MATH, max_tokens=16, stream=True
        )
    )
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].model_extra["booagent"]["strategy"] == "ensemble"  # type: ignore[index]


APPLES = [
    {
        "role": "user",
        "content": "Tom has 12 apples. He gives 5 of them to his friend. How many apples does "
        "Tom have left? Give the final answer as a number on the last line.",
    }
]


@pytest.mark.parametrize("stream", [False, True])
def test_program_answers_a_word_problem_with_the_number_it_computed(
    client: openai.OpenAI, stream: bool
) -> None:
    """The coder writes a program, the gateway runs it, the answer ends with its number."""
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="booagent-cluster:program", messages=APPLES, temperature=0, seed=1,
                max_tokens=200, stream=True,
            )
        )  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        meta = chunks[-1].model_extra["booagent"]  # type: ignore[index]
    else:
        done = client.chat.completions.create(
            model="booagent-cluster:program", messages=APPLES, temperature=0, seed=1,
            max_tokens=200,
        )  # fmt: skip
        text, meta = done.choices[0].message.content or "", done.model_extra["booagent"]  # type: ignore[index]
    assert "```python" in text and text.splitlines()[-1] == "7"
    assert meta["strategy"] == "program" and meta["ran"] and meta["answer"] == "7"
    assert [c["member"] for c in meta["calls"]] == [CODER]


def test_extra_body_overrides_strategy_and_members(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="booagent-cluster",
        messages=MATH,
        max_tokens=16,
        extra_body={"booagent": {"strategy": "ensemble", "members": [SMOL], "samples": 2}},
    )
    meta = done.model_extra["booagent"]  # type: ignore[index]
    assert meta["strategy"] == "ensemble"
    assert [c["member"] for c in meta["calls"]] == [SMOL, SMOL]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"strategy": "magic"}, "booagent.strategy"),
        ({"turbo": True}, "booagent"),
        ({"members": ["gpt-9"]}, "booagent.members"),
        ({"deadline_ms": -5}, "booagent.deadline_ms"),
    ],
)
def test_bad_options_are_400_naming_them(
    client: openai.OpenAI, options: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="booagent-cluster", messages=MATH, extra_body={"booagent": options}
        )
    assert caught.value.body["param"] == param  # type: ignore[index]


DOUBLE = [
    {
        "role": "user",
        "content": "Write a Python function `double(x)` that returns x * 2. For example, "
        "`double(4)` should return `8` and double(-1) -> -2. Reply with only the code.",
    }
]


def _tested(meta: dict[str, Any]) -> None:
    assert meta["strategy"] == "tested"
    assert meta["checks"]["stated"] == 2
    assert meta["tries"][0]["checks"] == 2 and meta["tries"][0]["member"] == CODER
    assert meta["passed"] is True, meta["tries"]


def test_tested_runs_the_code_before_answering(client: openai.OpenAI) -> None:
    """A whole answer: the code was run against the request's two examples."""
    done = client.chat.completions.create(
        model="booagent-cluster:tested", messages=DOUBLE, max_tokens=128, temperature=0
    )
    meta = done.model_extra["booagent"]  # type: ignore[index]
    _tested(meta)
    assert "def double" in (done.choices[0].message.content or "")


def test_tested_stream_through_the_sdk(client: openai.OpenAI) -> None:
    """Streamed: keep-alives while the code runs, then the chosen answer and its record."""
    chunks = list(
        client.chat.completions.create(
            model="booagent-cluster:tested", messages=DOUBLE, max_tokens=128, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "def double" in text
    _tested(chunks[-1].model_extra["booagent"])  # type: ignore[index]


def test_the_default_model_checks_code_that_states_examples(client: openai.OpenAI) -> None:
    """The packaged `auto` table sends a code request stating examples to `tested`: the
    streamed answer was run against them first."""
    chunks = list(
        client.chat.completions.create(
            model="booagent-cluster", messages=DOUBLE, max_tokens=128, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "def double" in text
    meta = chunks[-1].model_extra["booagent"]  # type: ignore[index]
    assert meta["requested"] == "auto"
    _tested(meta)


def test_tested_passes_other_requests_through(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model="booagent-cluster:tested", messages=MATH, max_tokens=16, temperature=0
    )
    assert done.model_extra["booagent"]["strategy"] == "route"  # type: ignore[index]


def test_tested_asks_a_member_for_assertions_when_none_are_stated(client: openai.OpenAI) -> None:
    """No example in the request: the test writer's assertions are run instead."""
    asked = [{"role": "user", "content": "Write a Python function `is_even(n)` that returns "
              "True when the integer n is even and False otherwise."}]  # fmt: skip
    done = client.with_options(timeout=300).chat.completions.create(
        model="booagent-cluster:tested",
        messages=asked,
        max_tokens=128,
        temperature=0,
        extra_body={"booagent": {"explain": True}},
    )
    meta = done.model_extra["booagent"]  # type: ignore[index]
    assert meta["checks"]["stated"] == 0 and meta["checks"]["by"] == CODER
    written = [c.get("text") for c in meta["calls"] if c["outcome"] == "wrote_tests"]
    assert meta["checks"]["written"] >= 1, written
    assert meta["tries"][0]["checks"] == meta["checks"]["written"]
    assert any(c["outcome"] == "wrote_tests" for c in meta["calls"])
