"""Tests for ensemble.classify: code, chore or general, judged from the request body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ensemble.classify import Kind, classify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "openwebui"
HELLO_MESSAGE = {"role": "user", "content": "Hello! How are you today?"}

TITLE_CHORE = """### Task:
Generate a concise, 3-5 word title with an emoji summarizing the chat history.
### Guidelines:
- The title should clearly represent the main theme or subject of the conversation.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: Write a Python function that reverses a list
ASSISTANT: ```python
def reverse(items):
    return items[::-1]
```
</chat_history>"""

CHORES = [
    TITLE_CHORE,
    "### Task:\nGenerate 1-3 broad tags categorizing the main themes of the chat history.",
    "### Task:\nSuggest 3-5 relevant follow-up questions the user might ask next.",
    "### Task:\nAnalyze the chat history to determine the necessity of generating search queries",
    "  ### task: autocomplete the user's sentence",
]

CODE = [
    "```python\nprint('hi')\n```",
    "Why does this fail?\n```\nx = [1, 2\n```",
    "Write a Python function that reverses a list",
    "Write an SQL query that finds duplicate emails in a users table",
    "SELECT name FROM users\nWHERE id = 1;",
    "def add(a, b):\n    return a + b",
    "What does this do?\nconst x = () => 1;\nlet y = x();",
    "How do I fix this traceback: KeyError: 'id'",
    "Implement a recursive function for fibonacci",
    "#include <stdio.h>\nint main() {\n  return 0;\n}",
]

STRUCTURED = [
    "Reply in JSON with keys name and age",
    "Give me a numbered list of European capitals",
    "Answer all in lowercase: what is your name?",
    "Describe the sea in exactly five words",
]

MATH = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A shirt costs $20 and is 15 percent off. What does it cost now?",
    "What is 12 x 7?",
    "A room is 4 metres long and 3 metres wide. What is its area?",
    "What is 20% of 150?",
]

GENERAL = [
    "What is the capital of France?",
    "Write a poem about the sea",
    "What is a string quartet?",
    "How do I make pancakes?",
    "Tell me a joke about cats.",
    "Explain the French Revolution in three sentences.",
    "What is the function of the liver?",
    "Which class of ships did the Titanic belong to?",
    "Recommend a good book for a long flight",
    "Translate 'good morning' into Spanish",
    "Who won the World Cup in 2018?",
    "Plan my week: Monday: gym\nTuesday: read",
]


def ask(content: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


class TestPrompts:
    @pytest.mark.parametrize("prompt", CHORES)
    def test_open_webui_tasks_are_chores(self, prompt: str) -> None:
        """Open WebUI's helper prompts start with ``### Task:``, whatever they quote."""
        assert classify(ask(prompt)) is Kind.CHORE

    @pytest.mark.parametrize("prompt", CODE)
    def test_programming_requests_are_code(self, prompt: str) -> None:
        """Code fences, code-like lines and programming vocabulary mean code."""
        assert classify(ask(prompt)) is Kind.CODE

    @pytest.mark.parametrize("prompt", STRUCTURED)
    def test_checkable_formats_are_structured(self, prompt: str) -> None:
        """Requests for JSON, lists, casing or exact counts are structured."""
        assert classify(ask(prompt)) is Kind.STRUCTURED

    @pytest.mark.parametrize("prompt", MATH)
    def test_word_problems_with_numbers_are_math(self, prompt: str) -> None:
        """Arithmetic and word problems with numbers are math."""
        assert classify(ask(prompt)) is Kind.MATH

    @pytest.mark.parametrize("prompt", GENERAL)
    def test_everyday_questions_are_general(self, prompt: str) -> None:
        """Everyday questions, even with one programming-sounding word, are general chat."""
        assert classify(ask(prompt)) is Kind.GENERAL


class TestBody:
    def test_last_user_message_decides(self) -> None:
        """An earlier coding turn does not make a later everyday question code."""
        body = {
            "messages": [
                {"role": "user", "content": "Write a Python script"},
                {"role": "assistant", "content": "```python\nprint(1)\n```"},
                {"role": "user", "content": "Thanks! Now, what is the capital of France?"},
            ]
        }
        assert classify(body) is Kind.GENERAL

    def test_content_parts_are_read(self) -> None:
        """Multi-part content (text plus images) is judged on its text parts."""
        parts = [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "Fix the bug in this code"},
        ]
        assert classify(ask(parts)) is Kind.CODE

    def test_a_short_follow_up_to_code_is_code(self) -> None:
        """ "Add a few tests for it" after an answer with code is about that code."""
        history = [
            {"role": "user", "content": "Write a function that reverses a list."},
            {"role": "assistant", "content": "```python\ndef rev(x):\n    return x[::-1]\n```"},
            {"role": "user", "content": "Now add a few tests for it."},
        ]
        assert classify({"messages": history}) is Kind.CODE
        prose = [*history[:1], {"role": "assistant", "content": "Sure, lists can be reversed."},
                 history[2]]  # fmt: skip
        assert classify({"messages": prose}) is not Kind.CODE

    def test_offered_tools_do_not_change_the_kind(self) -> None:
        """Tools offered with ``auto`` (Open WebUI attaches 36 to every turn, a code
        interpreter among them) leave the kind to the user's message."""
        tools = [
            {"type": "function", "function": {"name": n, "parameters": {}}}
            for n in ("run_python", "execute_code", "get_weather")
        ]
        assert classify(ask("What is the capital of France?", tools=tools)) is Kind.GENERAL
        assert classify(ask("Write a Python function to sort a list.", tools=tools)) is Kind.CODE

    def test_open_webui_turns_keep_their_kind(self) -> None:
        """The captured Open WebUI turn (a coding question with its built-in tools) is code."""
        body = json.loads((FIXTURES / "chat_turn_1.json").read_text())
        assert len(body["tools"]) == 36
        assert classify(body) is Kind.CODE
        assert classify({**body, "messages": [HELLO_MESSAGE]}) is Kind.GENERAL

    @pytest.mark.parametrize(
        "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
    )
    def test_a_forced_call_keeps_the_messages_kind(self, choice: object) -> None:
        """A forced call is valid by construction (the nodes' grammar): nothing cheap can
        judge it, so it goes where its question would."""
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
        body = ask("What is the weather in Paris?", tools=tools, tool_choice=choice)
        assert classify(body) is Kind.GENERAL

    def test_response_format_means_structured(self) -> None:
        """A requested response format is structured whatever the prompt says."""
        body = ask("Tell me about cats", response_format={"type": "json_object"})
        assert classify(body) is Kind.STRUCTURED

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"messages": []},
            {"messages": [{"role": "system", "content": "```python\n```"}]},
            {"messages": [{"role": "user", "content": None}]},
            {"messages": ["not a message", {"role": "user"}]},
        ],
    )
    def test_no_user_text_is_general(self, body: dict[str, Any]) -> None:
        """Without user text there is nothing to route on: general."""
        assert classify(body) is Kind.GENERAL
