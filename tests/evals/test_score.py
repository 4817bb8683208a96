"""Tests for evals.score: each checker with good and bad answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ensemble import sandbox
from evals.formats import (
    Case,
    Choice,
    Contains,
    Csv,
    EndsWith,
    JsonList,
    JsonObject,
    Lines,
    ListItems,
    Regex,
    Rule,
    StartsWith,
    Words,
)
from evals.items import CodeCheck, FormatCheck, MatchCheck, NumberCheck
from evals.score import (
    extract_code,
    extract_number,
    normalise,
    score_code,
    score_format,
    score_match,
    score_number,
)

ADD = CodeCheck(entry="add", tests=("assert add(1, 2) == 3", "assert add(-1, 1) == 0"))
GOOD_ADD = "def add(a, b):\n    return a + b"


class TestExtractCode:
    """Code is found in a fence, an unterminated fence, or bare among prose."""

    def test_fenced_block_defining_the_entry_wins(self) -> None:
        answer = f"Usage:\n```python\nprint(add(1, 2))\n```\nCode:\n```python\n{GOOD_ADD}\n```"
        assert extract_code(answer, "add") == GOOD_ADD

    def test_unterminated_fence_counts(self) -> None:
        assert extract_code(f"```python\n{GOOD_ADD}\n", "add").strip() == GOOD_ADD

    def test_bare_code_loses_trailing_prose(self) -> None:
        answer = f"Here it is:\n\n{GOOD_ADD}\n\nThis adds two numbers."
        assert extract_code(answer, "add") == GOOD_ADD

    def test_non_python_fences_are_ignored(self) -> None:
        answer = f"```bash\npython x.py\n```\n```py\n{GOOD_ADD}\n```"
        assert extract_code(answer, "add") == GOOD_ADD


class TestScoreCode:
    """Code passes only when it parses, defines the function and passes every test in time."""

    def test_correct_fenced_code_passes(self) -> None:
        assert score_code(f"```python\n{GOOD_ADD}\n```", ADD).correct

    def test_correct_bare_code_passes(self) -> None:
        assert score_code(f"Sure!\n{GOOD_ADD}\nDone.", ADD).correct

    def test_wrong_code_fails_its_test(self) -> None:
        result = score_code("```python\ndef add(a, b):\n    return a - b\n```", ADD)
        assert not result.correct
        assert "test 1" in result.detail

    def test_code_that_does_not_parse_fails_without_running(self) -> None:
        result = score_code("```python\ndef add(a, b)\n    return a +\n```", ADD)
        assert (result.correct, result.detail) == (False, "code does not parse")

    def test_missing_function_fails(self) -> None:
        result = score_code("```python\ndef plus(a, b):\n    return a + b\n```", ADD)
        assert (result.correct, result.detail) == (False, "no function `add`")

    def test_prose_only_fails(self) -> None:
        assert not score_code("I cannot help with that.", ADD).correct

    def test_endless_loop_times_out(self) -> None:
        check = CodeCheck(entry="add", tests=("assert add(1, 2) == 3",), timeout=1.0)
        answer = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
        result = score_code(answer, check)
        assert (result.correct, result.detail) == (False, "timed out after 1 s")

    def test_early_exit_is_not_success(self) -> None:
        answer = "```python\nimport sys\ndef add(a, b):\n    sys.exit(0)\n```"
        assert not score_code(answer, ADD).correct

    def test_demo_code_around_the_function_is_not_run(self) -> None:
        answer = (
            f"```python\n{GOOD_ADD}\n\nassert add(2, 2) == 5  # a wrong self-check\n"
            "print(add(1, 2))\nif __name__ == '__main__':\n    input()\n```"
        )
        assert score_code(answer, ADD).correct

    def test_module_constants_are_kept(self) -> None:
        answer = "```python\nOFFSET = 0\ndef add(a, b):\n    return a + b + OFFSET\n```"
        assert score_code(answer, ADD).correct

    def test_input_reads_nothing(self) -> None:
        answer = "```python\ndef add(a, b):\n    return int(input()) + a + b\n```"
        assert not score_code(answer, ADD).correct


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP listener on loopback; yields its port and a list that records connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append("connected")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    server.close()


class TestNoNetwork:
    """Answer code cannot open network connections, even to loopback."""

    def test_socket_connection_fails(self, listener: tuple[int, list[str]]) -> None:
        port, accepted = listener
        answer = (
            "```python\nimport socket\n"
            f"conn = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            f"{GOOD_ADD}\n```"
        )
        result = score_code(answer, ADD)
        assert not result.correct
        assert "OSError" in result.detail
        assert accepted == []

    def test_low_level_socket_module_is_contained_too(
        self, listener: tuple[int, list[str]]
    ) -> None:
        port, accepted = listener
        answer = (
            "```python\nimport _socket\ndef add(a, b):\n    s = _socket.socket()\n"
            f"    s.settimeout(1)\n    s.connect(('127.0.0.1', {port}))\n    return a + b\n```"
        )
        assert not score_code(answer, ADD).correct
        assert accepted == [], "the network namespace (or the preamble) stops raw sockets"


class TestNumber:
    """The last number in the answer is compared within the tolerance."""

    @pytest.mark.parametrize(
        ("answer", "value"),
        [
            ("12 - 5 = 7\nThe answer is 7.", 7.0),
            ("Total: 1,500 books", 1500.0),
            ("It was -4, then it rose to 7 degrees", 7.0),
            ("The price is $13.50.", 13.5),
            ("#### 42", 42.0),
            ("So he earns \\(\\boxed{120}\\) dollars for 8 hours.", 120.0),
            ("\\boxed{1} is wrong; \\boxed{-2.5} it is, after 3 tries", -2.5),
            ("No digits here", None),
        ],
    )
    def test_extract_number(self, answer: str, value: float | None) -> None:
        assert extract_number(answer) == value

    def test_right_answer_after_working(self) -> None:
        assert score_number("3 * 4.5 = 13.5\n13.5", NumberCheck(13.5)).correct

    def test_within_tolerance(self) -> None:
        assert score_number("about 24.004", NumberCheck(24, tol=0.01)).correct

    def test_wrong_last_number(self) -> None:
        assert not score_number("7 apples, so 12 - 5 = 8", NumberCheck(7)).correct

    def test_negative_answer(self) -> None:
        assert score_number("The temperature is -3 degrees", NumberCheck(-3)).correct
        assert not score_number("The temperature is 3 degrees", NumberCheck(-3)).correct

    def test_no_number(self) -> None:
        result = score_number("I don't know", NumberCheck(7))
        assert (result.correct, result.detail) == (False, "no number")


class TestMatch:
    """An alias must appear as whole words after normalisation."""

    def test_normalise(self) -> None:
        assert normalise("The  Café, São-Paulo!") == "cafe sao paulo"

    def test_alias_in_a_sentence(self) -> None:
        check = MatchCheck(("Shakespeare", "William Shakespeare"))
        assert score_match("It was written by William Shakespeare.", check).correct

    def test_case_and_articles_do_not_matter(self) -> None:
        assert score_match("THE BLUE WHALE", MatchCheck(("blue whale",))).correct

    def test_numeric_alias(self) -> None:
        assert score_match("A spider has eight legs.", MatchCheck(("8", "eight"))).correct

    def test_part_of_a_word_does_not_count(self) -> None:
        assert not score_match("Parisian cafes", MatchCheck(("Paris",))).correct

    def test_wrong_answer(self) -> None:
        assert not score_match(
            "The capital of Australia is Sydney.", MatchCheck(("Canberra",))
        ).correct


def fmt(*rules: Rule) -> FormatCheck:
    return FormatCheck(rules=rules)


FORMAT_CASES: list[tuple[Rule, str, str]] = [
    (JsonObject({"name": "str", "age": "int"}), '{"name": "Ann", "age": 31}', '{"name": "Ann"}'),
    (
        JsonObject({"name": "str", "age": "int"}),
        '```json\n{"name": "A", "age": 3}\n```',
        '{"name": "A", "age": "3"}',
    ),
    (JsonObject({"a": "bool"}), '{"a": true}', '{"a": true, "b": 1}'),
    (JsonObject({"a": "int"}), '{"a": 1}', 'Here is the JSON: {"a": 1}'),
    (JsonList(3), '["cat", "dog", "cow"]', '["cat", "dog"]'),
    (JsonList(2, item="int"), "[1, 2]", "[1, true]"),
    (Words(5, 5), "The ocean is deep blue.", "The ocean is very deep and blue."),
    (
        Words(1, 9),
        "A loyal friendly dog.",
        "A dog is a loyal and friendly animal that loves people.",
    ),
    (
        ListItems(3, style="bullet", only=True),
        "- apple\n- pear\n- plum",
        "Fruits:\n- apple\n- pear\n- plum",
    ),
    (ListItems(2, style="numbered"), "1. a\n2) b", "1. a\n- b"),
    (ListItems(0), "Python\nRust", "- Python\n- Rust"),
    (Case("lower"), "cats sleep a lot.", "Cats sleep a lot."),
    (Case("upper"), "HELLO!", "Hello"),
    (StartsWith("Certainly"), "certainly! A computer is...", "Sure, certainly."),
    (
        EndsWith("Is there anything else?"),
        "Rain is water. Is there anything else?",
        "Is there anything else? Bye.",
    ),
    (Contains(",", 0, 0), "Snow falls. It is cold.", "Snow falls, it is cold."),
    (Contains("banana", 2, 2), "Banana bread with banana.", "One banana."),
    (Regex("<<[^<>\\n]+>>"), "<<Grow Tomatoes>>", "Title: <<Grow Tomatoes>>"),
    (Choice(("yes", "no")), "Yes.", "Yes, it is."),
    (Csv(4), "red, green, blue, yellow", "red, green, blue"),
    (Csv(2), "saturday, sunday", "saturday,\nsunday"),
    (Lines(2), "red\n\nblue\n", "red blue"),
]


class TestFormat:
    """Each rule accepts a conforming answer and rejects a non-conforming one."""

    @pytest.mark.parametrize(("rule", "good", "bad"), FORMAT_CASES)
    def test_rule(self, rule: Rule, good: str, bad: str) -> None:
        assert score_format(good, fmt(rule)).correct, rule.problem(good)
        assert not score_format(bad, fmt(rule)).correct

    def test_every_rule_must_hold_and_problems_are_named(self) -> None:
        check = fmt(Case("lower"), Words(3, 3))
        assert score_format("three small words", check).correct
        result = score_format("Four Small Words Here", check)
        assert not result.correct
        assert result.detail == "not all lowercase; 4 words"


class TestWithoutNamespaces:
    """Where ``unshare`` is unavailable, the preamble alone still refuses sockets."""

    def test_preamble_blocks_connections(
        self, listener: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sandbox, "network_jail", lambda: ())
        port, accepted = listener
        answer = (
            "```python\nimport socket\ndef add(a, b):\n"
            f"    socket.socket().connect(('127.0.0.1', {port}))\n    return a + b\n```"
        )
        result = score_code(answer, ADD)
        assert (result.correct, accepted) == (False, [])
        assert "network access is disabled" in result.detail
        assert score_code(f"```python\n{GOOD_ADD}\n```", ADD).correct
