"""Tests for ensemble.code_run: an answer's code against checks, contained, check by check."""

from __future__ import annotations

import pytest

from ensemble.code_run import Assertion, ProgramRun, Trial, as_assertion, run_checks
from ensemble.sandbox import CODE_POLICY, Limits, screen

pytestmark = pytest.mark.anyio
QUICK = Limits(cpu_seconds=1, wall_seconds=10)  # wall time only bounds a hung test
DOUBLE = "def double(n):\n    return 2 * n\n"


def checks(*statements: str) -> list[Assertion]:
    made = [as_assertion(s) for s in statements]
    assert all(made)
    return [m for m in made if m is not None]


async def trial(code: str, *statements: str) -> Trial:
    return await run_checks(code, checks(*statements), QUICK)


class TestAssertions:
    async def test_each_check_is_reported_on_its_own(self) -> None:
        found = await trial(
            "def double(n):\n    return 5 if n == 2 else 2 * n\n",
            "assert double(2) == 4", "assert double(3) == 6", "assert double(0) == 0",
        )  # fmt: skip
        assert [r.passed for r in found.results] == [False, True, True]
        assert found.results[0].shown() == "double(2) == 4: got 5"
        assert not found.clean and found.passed() == 2

    async def test_floats_compare_within_a_tolerance_and_lists_match_tuples(self) -> None:
        code = "def f(x):\n    return (0.1 + 0.2, [x])\n"
        found = await trial(code, "assert f(1) == [0.3, (1,)]")
        assert found.clean

    async def test_an_exception_names_its_type_and_message(self) -> None:
        found = await trial("def double(n):\n    return int('x')\n", "assert double(1) == 2")
        failure = found.results[0].failure or ""
        assert failure.startswith("ValueError: invalid literal")

    @pytest.mark.parametrize(
        "code",
        [
            "from datetime import datetime\ndef days(a, b):\n    f = '%Y-%m-%d'\n"
            "    return (datetime.strptime(b, f) - datetime.strptime(a, f)).days\n",
            "import time\ndef days(a, b):\n    return (time.mktime(time.strptime(b, '%Y-%m-%d'))"
            " - time.mktime(time.strptime(a, '%Y-%m-%d'))) // 86400\n",
        ],
    )
    async def test_a_module_that_imports_more_when_used_works(self, code: str) -> None:
        """``strptime`` imports ``_strptime`` on its first call, after the audit hook is in."""
        found = await trial(code, "assert days('2024-01-01', '2024-03-01') == 60")
        assert found.clean, found.results[0].failure

    async def test_code_that_fails_to_load_fails_every_check(self) -> None:
        found = await trial("x = 1 / 0\n" + DOUBLE, "assert double(1) == 2", "assert True")
        assert all("ZeroDivisionError" in (r.failure or "") for r in found.results)

    async def test_a_main_block_does_not_run_for_assertions(self) -> None:
        code = DOUBLE + "if __name__ == '__main__':\n    print(double(int(input())))\n"
        assert (await trial(code, "assert double(4) == 8")).clean

    async def test_classes_private_attributes_and_common_modules_work(self) -> None:
        code = (
            "from dataclasses import dataclass, field\nfrom collections import namedtuple\n"
            "import heapq, typing, enum\n"
            "@dataclass\nclass Stack:\n    _items: list = field(default_factory=list)\n"
            "    def push(self, x):\n        heapq.heappush(self._items, x)\n"
            "    def __len__(self):\n        return len(self._items)\n"
        )
        assert (await trial(code, "s = Stack()\ns.push(3)\nassert len(s) == 1")).clean

    async def test_the_code_cannot_replace_the_checks_helper(self) -> None:
        code = "def _expect(*args):\n    return None\ndef double(n):\n    return 0\n"
        assert not (await trial(code, "assert double(2) == 4")).clean


class TestPrograms:
    async def test_a_program_reads_its_input_and_is_judged_by_what_it_prints(self) -> None:
        code = "n = int(input())\nfor i in range(n):\n    print(i)   \n"
        runs = [ProgramRun("3\n", "0\n1\n2\n"), ProgramRun("2\n", "1\n2\n")]
        found = await run_checks(code, runs, QUICK)
        assert [r.passed for r in found.results] == [True, False]
        assert found.results[1].failure == "it printed '0\\n1\\n'"

    async def test_sys_exit_zero_ends_a_program_cleanly(self) -> None:
        code = "import sys\nprint(sum(map(int, sys.stdin.read().split())))\nsys.exit(0)\n"
        found = await run_checks(code, [ProgramRun("1 2 3\n", "6\n")], QUICK)
        assert found.clean


class TestContainment:
    @pytest.mark.parametrize(
        ("code", "named"),
        [
            ("import subprocess", "'subprocess'"),
            ("import socket", "'socket'"),
            ("open('/tmp/x', 'w').write('x')", "'open'"),
            ("eval('1')", "'eval'"),
            ("__builtins__['open']", "'__builtins__'"),
            ("from . import secrets", "'.'"),
        ],
    )
    def test_reaching_outside_is_refused_before_running(self, code: str, named: str) -> None:
        refused = screen(code, CODE_POLICY)
        assert refused is not None and named in refused

    @pytest.mark.parametrize(
        ("code", "reason"),
        [
            ("import sys\ndef f():\n    return sys.modules['os'].system('true')\n",
             "os.system is not allowed"),
            ("import sys\ndef f():\n    return sys.modules['os'].listdir('/')\n",
             "os.listdir is not allowed"),
            ("import sys\ndef f():\n    return sys.modules['socket'].getaddrinfo('x', 80)\n",
             "network access is disabled"),
            ("import json\ndef f():\n    return __import__('os')\n", "'__import__'"),
            ("def f():\n    return 'x' * (1 << 34)\n", "MemoryError"),
        ],
    )  # fmt: skip
    async def test_a_hostile_call_fails_its_check(self, code: str, reason: str) -> None:
        found = await trial(code, "assert f() is None")
        failure = found.refused or found.results[0].failure or ""
        assert reason in failure, failure

    async def test_a_busy_loop_is_stopped_by_its_cpu_limit(self) -> None:
        code = "def f():\n    while True:\n        pass\n"
        found = await run_checks(code, checks("assert f() is None"), Limits(1, 30.0))
        assert found.results[0].failure == "used up its CPU time"

    async def test_a_program_that_never_ends_is_stopped_by_the_wall_clock(self) -> None:
        code = "import time\ndef f():\n    time.sleep(60)\n"
        found = await run_checks(code, checks("assert f() is None"), Limits(5, 1.0))
        # On a busy machine the wall clock may run out before the code has loaded: the
        # failure then says so first.
        assert (found.results[0].failure or "").endswith("ran longer than 1 s")

    async def test_printing_cannot_pass_for_a_result(self) -> None:
        code = (
            "import json\nfor i in range(3):\n    print(json.dumps(['0' * 32, i, None, '']))\n"
            "def f():\n    return 1\n"
        )
        found = await trial(code, "assert f() == 2")
        assert not found.clean

    async def test_a_flood_of_output_is_cut_off(self) -> None:
        code = (
            "import sys\ndef f():\n    while True:\n        sys.modules['os'].write(1, b'x\\n')\n"
        )
        found = await trial(code, "assert f() is None")
        assert "printed more than" in (found.results[0].failure or "")

    async def test_code_that_does_not_parse_is_refused(self) -> None:
        found = await trial("def double(n) return n", "assert double(1) == 2")
        assert found.refused is not None and "does not parse" in found.refused
        assert found.summary()["refused"] == found.refused


async def test_a_dataclass_with_postponed_annotations_works() -> None:
    """The answer runs as a real module: dataclasses look their module's annotations up."""
    code = (
        "from __future__ import annotations\nfrom dataclasses import dataclass\n"
        "@dataclass\nclass P:\n    x: int\ndef f():\n    return P(2).x\n"
    )
    assert (await trial(code, "assert f() == 2")).clean
    found = await run_checks(code + "print(f())\n", [ProgramRun("", "2\n")], QUICK)
    assert found.clean
