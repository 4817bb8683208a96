"""What the strategies read from a request the parser accepted: never a crash, never slow.

The cascade checks answers against schemas and instructions taken from the request itself
(``response_format.json_schema.schema``, tool parameters, "exactly five words"), so those are
untrusted input too. Hypothesis draws accepted bodies and answers; every check must return.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backends.base import Chunk
from ensemble.candidates import Candidate
from ensemble.cascade import structural_signal
from ensemble.checks import Checker
from ensemble.classify import Kind, classify
from ensemble.instructions import failed_checks
from ensemble.signals import json_matches
from gateway.errors import InvalidRequest
from gateway.schema import parse_chat
from tests.fakes import content_chunk

keys = st.sampled_from(["a", "b"]) | st.text(max_size=3)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
schema_like = st.recursive(
    json_values,
    lambda inner: st.dictionaries(
        st.sampled_from(["type", "properties", "required", "items", "a", "b"]), inner, max_size=4
    ),
    max_leaves=12,
)
response_formats = st.fixed_dictionaries(
    {"type": st.sampled_from(["json_object", "json_schema", "text"]) | json_values},
    optional={"json_schema": json_values | st.fixed_dictionaries({"schema": schema_like})},
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "run_code"])}, optional={"parameters": schema_like}
            ),
        }
    ),
    max_size=2,
)
answers = json_values.map(json.dumps) | st.text(max_size=60) | st.just("```python\nx = (\n```")
words = st.sampled_from(
    ["exactly", "five", "3", "words", "comma-separated", "numbered list", "bullet", "json",
     "lowercase", "answer with only yes or no", "start with 'A'", "items", "\n", " ", "-", "1."]
)  # fmt: skip
prompts = st.lists(words | st.text(max_size=5), max_size=20).map(" ".join)


def candidate(text: str, call_name: str | None) -> Candidate:
    found = Candidate("m1", chunks=[content_chunk(text)])
    found.acc.add(content_chunk(text))
    if call_name is not None:
        call = {"index": 0, "id": "c", "function": {"name": call_name, "arguments": text}}
        found.acc.add(Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
    return found


@settings(max_examples=300, deadline=None)
@given(
    prompt=prompts,
    response_format=st.none() | response_formats,
    tool_list=st.none() | tools,
    answer=answers,
    call_name=st.none() | st.sampled_from(["f", "run_code", "g"]),
)
def test_cascade_checks_of_accepted_bodies_never_raise(
    prompt: str,
    response_format: dict[str, Any] | None,
    tool_list: list[dict[str, Any]] | None,
    answer: str,
    call_name: str | None,
) -> None:
    """Finding: a malformed schema inside an accepted body (``properties: {"a": 5}``,
    ``required: 5``, ``json_schema: "x"``) crashed the cascade with a 500; every accepted body
    and any answer now get a verdict."""
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    body.update({"response_format": response_format, "tools": tool_list})
    try:
        parsed = parse_chat(json.dumps(body).encode())
    except InvalidRequest:
        assume(False)
    found = candidate(answer, call_name)
    for kind in Kind:
        structural_signal(found, Checker.of(parsed.forward, kind))
    assert classify(parsed.forward) in set(Kind)


@settings(max_examples=300)
@given(schema=schema_like, answer=answers)
def test_any_schema_and_answer_get_a_verdict(schema: Any, answer: str) -> None:
    """The JSON check takes whatever schema the request holds, however malformed."""
    assert json_matches(answer, schema) in (True, False)


@given(prompt=prompts, answer=answers)
def test_instruction_checks_never_raise(prompt: str, answer: str) -> None:
    """Any prompt and answer give None or a list of broken instructions."""
    failed = failed_checks(prompt, answer)
    assert failed is None or all(isinstance(name, str) for name in failed)


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        pytest.param("comma-separated " * 20_000, "a, b", id="many-comma-separated"),
        pytest.param("1 a " * 50_000 + "comma-separated", "a, b", id="many-counts"),
        pytest.param("a numbered list of exactly 3 items", "\n" * 200_000, id="blank-answer"),
    ],
)
def test_instruction_checks_take_linear_time(prompt: str, answer: str) -> None:
    """Finding: a prompt of 20,000 "comma-separated" took 220 s to scan, and an answer of
    40,000 newlines 30 s; both scans are linear now."""
    started = time.perf_counter()
    failed_checks(prompt, answer)
    assert time.perf_counter() - started < 2.0


def test_answer_nested_past_the_recursion_limit_is_not_json() -> None:
    """An answer nested deeper than ``json`` can follow fails the JSON check, not the request."""
    body = {"model": "m", "messages": [{"role": "user", "content": "json"}]}
    body["response_format"] = {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}
    found = candidate("[" * 100_000 + "]" * 100_000, None)
    forward = parse_chat(json.dumps(body).encode()).forward
    signal = structural_signal(found, Checker.of(forward, Kind.GENERAL))
    assert signal is not None and not signal.accept
