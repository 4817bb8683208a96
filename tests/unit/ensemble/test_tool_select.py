"""Of many offered tools, only those a turn's words point to are sent (ensemble.tool_select)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ensemble.tool_select import select_tools, stems

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openwebui"
OPEN_WEBUI_TURN = json.loads((FIXTURES / "chat_turn_1.json").read_text())


def asking(text: str, **extra: Any) -> dict[str, Any]:
    return {**OPEN_WEBUI_TURN, "messages": [{"role": "user", "content": text}], **extra}


def test_a_question_no_tool_is_about_is_sent_without_tools() -> None:
    """Open WebUI's coding turn: none of its 36 tools is about it, so none is sent."""
    body, selected = select_tools(OPEN_WEBUI_TURN, above=8, keep=4)
    assert "tools" not in body and "tool_choice" not in body
    assert selected is not None and (selected.offered, selected.sent) == (36, ())


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is on my calendar tomorrow?", "search_calendar_events"),
        ("Add a task to buy milk", "create_tasks"),
        ("Look through my notes for the recipe", "search_notes"),
        ("What time is it now?", "get_current_timestamp"),
    ],
)
def test_the_tools_a_question_points_to_are_kept(question: str, expected: str) -> None:
    body, selected = select_tools(asking(question), above=8, keep=4)
    assert selected is not None and expected in selected.sent
    assert [t["function"]["name"] for t in body["tools"]] == list(selected.sent)
    assert len(selected.sent) <= 4


def test_a_tool_the_conversation_called_is_kept() -> None:
    history = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "view_note", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "..."},
        {"role": "user", "content": "Thanks!"},
    ]  # fmt: skip
    _, selected = select_tools({**OPEN_WEBUI_TURN, "messages": history}, above=8, keep=4)
    assert selected is not None and selected.sent == ("view_note",)


@pytest.mark.parametrize(
    "extra", [{"tool_choice": "required"}, {"tool_choice": "none"},
              {"tool_choice": {"type": "function", "function": {"name": "view_note"}}}],
)  # fmt: skip
def test_a_choice_the_client_made_is_left_alone(extra: dict[str, Any]) -> None:
    body, selected = select_tools(asking("Hello", **extra), above=8, keep=4)
    assert selected is None and len(body["tools"]) == 36


def test_a_few_tools_are_left_alone() -> None:
    few = {**asking("Hello"), "tools": OPEN_WEBUI_TURN["tools"][:8]}
    assert select_tools(few, above=8, keep=4) == (few, None)


def test_words_are_matched_by_their_stems() -> None:
    assert stems("Searching my Notes") == {"note"}
    assert stems("searchCalendarEvents") == {"calendar", "event"}
    assert stems("entries, processing, boxes") == {"entry", "process", "box"}
