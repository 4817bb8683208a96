"""Tests for ensemble.code_checks: the examples a code request states, read as checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble.code_checks import (
    defined_names,
    entries,
    python_code_asked,
    stated,
    written_tests,
)
from ensemble.code_run import Assertion, ProgramRun

pytestmark = pytest.mark.anyio


def shown(text: str) -> list[str]:
    return [c.shown for c in stated(text).checks if isinstance(c, Assertion)]


class TestWhatIsAsked:
    @pytest.mark.parametrize(
        ("text", "asked"),
        [
            ("Write a Python function `add(a, b)` that returns the sum.", True),
            ("Implement `is_prime(n)`.", True),
            ("Write a function that reverses a string.", True),
            ("Fix this code so it runs:\n```python\ndef f(:\n```", True),
            ("Write a JavaScript function that adds two numbers.", False),
            ("Write a function in Rust that reverses a string.", False),
            ("Write a C function that reverses a string.", False),
            ("Write this in Python, not Java: a function that adds.", True),
            ("What does this code print? print(len('abc'))", False),
            ("Explain what a closure is.", False),
        ],
    )
    def test_python_code_asked(self, text: str, asked: bool) -> None:
        assert python_code_asked(text) is asked

    def test_named_functions_and_classes(self) -> None:
        text = (
            "Write `merge(a, b)` and a class named `Heap`, plus def helper(x): and a "
            "function total( that sums; `n` is an integer and `True` is not a name."
        )
        assert entries(text) == ("merge", "Heap", "helper", "total")

    def test_defined_names(self) -> None:
        code = "import math\ndef f():\n    def inner(): pass\nclass C: pass\nasync def g(): pass\n"
        assert defined_names(code) == ("f", "C", "g")
        assert defined_names("not python(") == ()


class TestExamples:
    def test_doctests_with_results_and_exceptions(self) -> None:
        text = '''Complete:
def add(a, b):
    """
    >>> add(2, 3)
    5
    >>> x = add(1, 1)
    >>> x * 2
    4
    >>> add('a', 1)
    Traceback (most recent call last):
    TypeError: can only concatenate
    """'''
        assert shown(text) == ["add(2, 3) == 5", "x * 2 == 4", "add('a', 1) raises TypeError"]

    @pytest.mark.parametrize(
        "text",
        [
            "For example, `f([1, 2])` should return `3`.",
            "f([1, 2]) -> 3",
            "e.g. calling f([1, 2]) returns 3, and so on",
            "f([1, 2]) == 3",
            "f([1, 2]) => 3.",
            "f([1,2]) should give 3",
            "assert f([1, 2]) == 3",
        ],
    )
    def test_inline_examples(self, text: str) -> None:
        assert shown("Write a Python function `f(xs)` that sums xs. " + text) == ["f([1, 2]) == 3"]

    def test_a_call_wrapped_in_builtins(self) -> None:
        text = "Write a generator `pairs(xs)`. list(pairs(range(3))) gives [(0, 1), (1, 2)]."
        assert shown(text) == ["list(pairs(range(3))) == [(0, 1), (1, 2)]"]

    def test_a_table_of_calls_and_results(self) -> None:
        text = (
            "Write a Python function `sub(xs)`.\n\n| call | result |\n|---|---|\n"
            "| `sub([])` | `[[]]` |\n| `sub([1])` | `[[], [1]]` |\n"
        )
        assert shown(text) == ["sub([]) == [[]]", "sub([1]) == [[], [1]]"]

    def test_arrows_and_becomes_give_the_named_function_argument_and_result(self) -> None:
        text = (
            "Write a Python function `snake(name)`. Examples:\n\n* 'aB' → 'a_b'\n"
            "2. 'cD' -> 'c_d'\n\nso 'eF' becomes 'e_f'."
        )
        assert shown(text) == [
            "snake('aB') == 'a_b'",
            "snake('cD') == 'c_d'",
            "snake('eF') == 'e_f'",
        ]

    def test_doctests_inside_a_fenced_docstring(self) -> None:
        text = (
            'Complete:\n\n```python\ndef f(a):\n    """Double.\n\n    >>> f(2)\n    4\n'
            '    >>> f(0)\n    0\n    """\n```\n'
        )
        assert shown(text) == ["f(2) == 4", "f(0) == 0"]

    def test_input_output_pairs_call_the_named_function(self) -> None:
        text = (
            "Implement `two_sum(nums, target)`.\n\nExample 1:\nInput: nums = [2,7,11,15], "
            "target = 9\nOutput: [0,1]\nExplanation: 2 + 7 is 9.\n\nExample 2:\n"
            "Input: nums = [3,2,4], target = 6\nOutput: [1,2]\n"
        )
        assert shown(text) == [
            "two_sum([2, 7, 11, 15], 9) == [0, 1]",
            "two_sum([3, 2, 4], 6) == [1, 2]",
        ]

    def test_a_program_that_reads_input_gets_its_samples_as_runs(self) -> None:
        text = (
            "Write a program that reads n from standard input and prints 1..n summed.\n\n"
            "Sample Input\n3\n\nSample Output\n6\n\nExample input:\n```\n4\n```\n"
            "Expected output:\n```\n10\n```\n"
        )
        found = stated(text)
        assert found.program
        assert found.checks == (ProgramRun("3\n", "6\n"), ProgramRun("4\n", "10\n"))

    @pytest.mark.parametrize(
        "text",
        [
            "Write `fib(n)` where fib(n) is the n-th Fibonacci number.",
            "Write def f(x) -> int: that doubles x.",
            "Write a function that takes an input list and outputs the list reversed.",
            "Write `f(x)`; f(x) should return something sensible.",
        ],
    )
    def test_nothing_concrete_states_no_check(self, text: str) -> None:
        assert stated(text).checks == ()

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=400))
    def test_any_text_is_read_without_error(self, text: str) -> None:
        found = stated(text)
        assert len(found.checks) <= 12


LITERALS = st.recursive(
    st.integers(-1000, 1000) | st.text("abc xyz", max_size=5) | st.booleans(),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
NAMES = st.from_regex(r"[a-z][a-z_]{2,10}", fullmatch=True).filter(
    lambda n: (
        n
        not in {
            "print",
            "input",
            "len",
            "range",
            "sorted",
            "sum",
            "max",
            "min",
            "abs",
            "def",
            "self",
            "python",
            "list",
            "dict",
            "set",
            "int",
            "str",
        }
    )
)
STYLES = (
    "For example, `{call}` should return `{result}`.",
    "{call} -> {result}",
    "{call} == {result}",
    "e.g. {call} returns {result}",
    "Example:\n>>> {call}\n{result}\n",
)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(NAMES, st.lists(LITERALS, min_size=1, max_size=3), LITERALS, st.sampled_from(STYLES))
    def test_a_stated_example_is_read_back_exactly(
        self, name: str, args: list[Any], result: Any, style: str
    ) -> None:
        call = f"{name}({', '.join(map(repr, args))})"
        text = f"Write a Python function `{name}`.\n" + style.format(call=call, result=repr(result))
        assert shown(text) == [f"{call} == {result!r}"]


class TestWrittenTests:
    def test_only_top_level_asserts_about_the_function_are_kept(self) -> None:
        answer = (
            "```python\nfrom solution import f\nassert f(1) == 2\nassert g(1) == 2\n"
            "def helper():\n    assert f(0) == 1\nassert f(2) == 3, 'two'\nprint(f(3))\n```"
        )
        found = written_tests(answer, ("f",))
        assert [c.described for c in found] == ["f(1) == 2", "f(2) == 3"]
        assert {c.origin for c in found} == {"generated"}

    def test_an_answer_without_code_gives_no_tests(self) -> None:
        assert written_tests("I cannot write tests for that.", ("f",)) == ()
