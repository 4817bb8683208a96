"""The JSON a prompt shows it wants, as a schema; chores asked for it (ensemble.json_shape)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ensemble.base import Context
from ensemble.classify import Kind
from ensemble.json_shape import requested_schema, schema_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openwebui"


@pytest.mark.parametrize(
    ("chore", "good", "bad"),
    [
        ("task_title", {"title": "Palindrome Checker"}, {"title": ""}),
        ("task_tags", {"tags": ["Technology", "Programming"]}, {"tags": "Technology"}),
        ("task_follow_ups", {"follow_ups": ["Add tests?"]}, {"follow_ups": []}),
    ],
)
def test_open_webui_chores_ask_for_their_own_objects(
    chore: str, good: dict[str, object], bad: dict[str, object]
) -> None:
    """Each captured chore yields a schema its intended answer meets and a wrong one fails."""
    body = json.loads((FIXTURES / f"{chore}.json").read_text())
    schema = requested_schema(body["messages"][-1]["content"])
    assert schema is not None
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "extra": 1}, schema)


@pytest.mark.parametrize(
    "prompt",
    [
        "Tell me about JSON.",
        "Reply in JSON.\n{not an example}",
        "JSON is nice; here is a set {1, 2}",
        'Some object: {"a": 1} but no mention before it',
    ],
)
def test_no_example_no_schema(prompt: str) -> None:
    assert requested_schema(prompt) is None


def test_example_values_give_types() -> None:
    schema = schema_of({"n": 3, "ok": True, "inner": {"x": "y"}, "list": []})
    assert schema["properties"]["n"] == {"type": "number"}
    assert schema["properties"]["ok"] == {"type": "boolean"}
    assert schema["properties"]["inner"]["required"] == ["x"]
    assert schema["properties"]["list"]["items"] == {"type": "string"}


def test_a_chore_that_shows_its_json_is_asked_with_its_schema() -> None:
    body = json.loads((FIXTURES / "task_tags.json").read_text())
    ctx = Context.of(body)
    assert ctx.kind is Kind.CHORE and ctx.request.priority == 1
    fmt = ctx.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["tags"]


def test_a_users_turn_is_not_forced_into_json() -> None:
    body = {"messages": [{"role": "user", "content": 'Answer in JSON format: {"a": 1}'}]}
    ctx = Context.of(body)
    assert "response_format" not in ctx.body and ctx.request.priority == 0
