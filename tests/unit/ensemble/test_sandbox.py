"""Tests for ensemble.sandbox: model-written programs are screened, contained and bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble.sandbox import Limits, run_program, screen

pytestmark = pytest.mark.anyio
QUICK = Limits(cpu_seconds=1, wall_seconds=3)


class TestScreen:
    @pytest.mark.parametrize(
        "code",
        [
            "x = 12 - 5\nprint(x)",
            "import math\nprint(math.sqrt(16))",
            "from fractions import Fraction\nprint(Fraction(1, 3) * 3)",
            "def solution():\n    return sum(range(10))\nprint(solution())",
            "class Box:\n    size = 3\nprint(Box.size * 2)",
            "_total = 0\nfor _ in range(3):\n    _total += 2\nprint(_total)",
        ],
    )
    def test_ordinary_arithmetic_programs_pass(self, code: str) -> None:
        """Arithmetic, allowed modules, functions and classes are let through."""
        assert screen(code) is None

    @pytest.mark.parametrize(
        ("code", "named"),
        [
            ("import os", "'os'"),
            ("import subprocess as sp", "'subprocess'"),
            ("from pathlib import Path", "'pathlib'"),
            ("import math, socket", "'socket'"),
            ("print(open('/etc/passwd').read())", "'open'"),
            ("eval('1 + 1')", "'eval'"),
            ("getattr(1, 'real')", "'getattr'"),
            ("print(().__class__)", "'__class__'"),
            ("import random\nrandom._os.system('true')", "'_os'"),
            ("from random import _os", "'_os'"),
            ("__import__('os')", "'__import__'"),
        ],
    )
    def test_reaching_outside_is_refused_before_running(self, code: str, named: str) -> None:
        """Imports outside the allowed modules, dunders and escape builtins are named."""
        refused = screen(code)
        assert refused is not None and named in refused

    def test_text_that_is_not_python_is_refused(self) -> None:
        refused = screen("The answer is 7.")
        assert refused is not None and "does not parse" in refused

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=200))
    def test_any_text_gets_a_verdict(self, text: str) -> None:
        """Screening never raises, whatever the model wrote."""
        assert screen(text) is None or isinstance(screen(text), str)


class TestRun:
    async def test_what_the_program_prints_is_returned(self) -> None:
        run = await run_program("apples = 12\ngiven = 5\nprint(apples - given)", QUICK)
        assert run.ok and run.output == "7\n"

    async def test_dates_parse_although_strptime_imports_on_first_use(self) -> None:
        code = (
            "from datetime import datetime\nf = '%Y-%m-%d'\n"
            "print((datetime.strptime('2024-03-01', f) - datetime.strptime('2024-01-01', f)).days)"
        )
        run = await run_program(code, QUICK)
        assert (run.output.strip(), run.error) == ("60", None)

    async def test_an_exception_is_reported_with_what_was_printed(self) -> None:
        run = await run_program("print(1)\nraise ValueError('boom')", QUICK)
        assert not run.ok and run.error == "ValueError: boom" and run.output == "1\n"

    async def test_a_refused_program_never_runs(self) -> None:
        run = await run_program("import os\nprint(os.getcwd())", QUICK)
        assert not run.ok and run.output == "" and "'os'" in (run.error or "")

    async def test_reading_frames_is_refused_while_running(self) -> None:
        """The audit hook stops a frame walk (the way back to the preamble's ``os``)."""
        code = "def g():\n    yield 1\nprint(g().gi_frame.f_back)"
        run = await run_program(code, QUICK)
        assert not run.ok and "not allowed in the sandbox" in (run.error or "")

    async def test_attribute_lookups_in_format_strings_are_refused(self) -> None:
        run = await run_program("print('{0.gi_frame}'.format(x for x in []))", QUICK)
        assert not run.ok and "not allowed in the sandbox" in (run.error or "")

    async def test_an_endless_loop_is_stopped_by_its_cpu_limit(self) -> None:
        run = await run_program("while True:\n    pass", QUICK)
        assert not run.ok and run.error == "the program used up its CPU time"

    async def test_a_long_run_is_stopped_by_the_wall_clock(self) -> None:
        """A program still running at ``wall_seconds`` is killed, whatever CPU it has left."""
        code = "import itertools\nprint(sum(1 for _ in itertools.count()))"
        run = await run_program(code, Limits(cpu_seconds=30, wall_seconds=0.5))
        assert not run.ok and run.error == "the program ran longer than 0.5 s"

    async def test_memory_is_bounded(self) -> None:
        run = await run_program("x = [0] * (10 ** 10)\nprint(len(x))", QUICK)
        assert not run.ok and (run.error or "").startswith("MemoryError")

    async def test_output_is_bounded(self) -> None:
        run = await run_program("while True:\n    print('a' * 1000)", QUICK)
        assert (
            not run.ok and run.error == f"the program printed more than {QUICK.output_bytes} bytes"
        )

    async def test_exiting_early_is_a_failure(self) -> None:
        run = await run_program("print(3)\nraise SystemExit(0)", QUICK)
        assert not run.ok and (run.error or "").startswith("SystemExit")
