"""Running an answer's code against checks, contained, and reading which checks passed.

A :class:`Check` is either an assertion about the answer's functions (``assert f(2) == 4``,
from an example in the request or written by a member) or a program run: the answer runs as
``__main__`` with ``stdin`` and must print ``stdout``. :func:`run_checks` runs the answer once
per program run, and once for all its assertions, each in a fresh child of
:mod:`ensemble.sandbox` (no network, no files, CPU, memory and wall-clock limits, an audit
hook), with :data:`ensemble.sandbox.CODE_POLICY`'s screen in front.

Every check is reported on its own: an assertion that fails does not stop the next, and an
equality that fails says what the call returned (``f(2) == 4: got 5``), which is what a member
asked to repair its answer needs. Results come back after a nonce the answer's code is never
given, so a program that prints cannot pass for a result.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ensemble.sandbox import (
    CODE_POLICY,
    Limits,
    child_job,
    contained,
    imported,
    screen,
    status_reason,
)

Origin = Literal["example", "generated"]
Reported = tuple[str | None, str, bool]
"""What the child reported of one check: its failure, what the code printed, and whether the
check's own assertion failed."""
_SHOWN = 160

# After the shared preamble (limits, no network): load the modules the code imports, install
# the audit hook, run the answer, then each assertion; each outcome is one JSON line after the
# nonce on the real stdout. The answer's own prints go to a buffer (returned for a program run).
_RUN_CHECKS = r"""
import io, math, types
sys.stderr = open(os.devnull, "w")
for _module in job["modules"]:
    try:
        __import__(_module)
    except ImportError:
        pass
_ALLOWED_EVENTS = frozenset({"exec", "compile", "builtins.id", "object.__setattr__",
                             "object.__delattr__", "object.__getattr__", "sys._getframe",
                             "time.sleep", "builtins.input", "builtins.input/result"})

def _refuse(event, args):
    if event not in _ALLOWED_EVENTS:
        raise RuntimeError(f"{event} is not allowed in the sandbox")

def _same(got, want):
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return got == want

def _expect(got, want, shown):
    if not _same(got, want):
        raise AssertionError(f"got {got!r:.160}")

def _failure(exc):
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return None
    if isinstance(exc, AssertionError) and str(exc):
        return str(exc)[:300]
    return f"{type(exc).__name__}: {str(exc)[:300]}"

_real, _exit, _nonce, _name = sys.stdout, os._exit, job["nonce"], job["name"]
_printed = io.StringIO()
code = compile(job["code"], "<answer>", "exec")
checks = [compile(c, f"<check {i}>", "exec") for i, c in enumerate(job["checks"], 1)]
sys.stdin = io.StringIO(job["stdin"])
del job

def _report(index, failure, printed="", wrong=False):
    _real.write(json.dumps([_nonce, index, failure, printed, wrong]) + "\n")
    _real.flush()

sys.stdout = _printed
# A real module, so that what looks its module up (dataclasses with string annotations) works.
_module = types.ModuleType(_name)
sys.modules[_name] = _module
namespace = _module.__dict__
namespace["_expect"] = _expect
sys.addaudithook(_refuse)
try:
    exec(code, namespace)
    failure = None
except BaseException as exc:
    failure = _failure(exc)
_report(-1, failure, _printed.getvalue()[-65536:])
if failure is not None:
    _exit(1)
for _index, _check in enumerate(checks):
    namespace["_expect"] = _expect
    try:
        exec(_check, namespace)
        _report(_index, None)
    except BaseException as exc:
        _report(_index, _failure(exc) or "SystemExit", "", isinstance(exc, AssertionError))
_exit(0)
"""


@dataclass(frozen=True, slots=True)
class Assertion:
    """Python statements about the answer's functions that raise when it is wrong."""

    source: str
    origin: Origin = "example"
    shown: str = ""
    """The check as a person reads it (``f(2) == 4``); the source when empty."""

    @property
    def described(self) -> str:
        return self.shown or self.source


@dataclass(frozen=True, slots=True)
class ProgramRun:
    """The answer run as a program with ``stdin``; it must print ``stdout`` (compared line by
    line, ignoring trailing spaces and blank lines at the end)."""

    stdin: str
    stdout: str
    origin: Origin = "example"

    @property
    def described(self) -> str:
        return f"input {_clip(self.stdin)!r} should print {_clip(self.stdout)!r}"


Check = Assertion | ProgramRun


@dataclass(frozen=True, slots=True)
class Result:
    """One check's outcome: ``failure`` is ``None`` when it passed, else why not; ``wrong``
    when the code ran and gave another value than the check expects (rather than raising,
    running too long or not loading)."""

    check: Check
    failure: str | None
    wrong: bool = False

    @property
    def passed(self) -> bool:
        return self.failure is None

    def shown(self) -> str:
        """The failure as a repair request shows it."""
        return f"{self.check.described}: {self.failure}"


@dataclass(frozen=True, slots=True)
class Trial:
    """An answer's code and every check's result; ``refused`` when the code could not run at
    all (it does not parse, or imports what the sandbox does not allow)."""

    code: str
    results: tuple[Result, ...] = ()
    refused: str | None = None

    def faults(self) -> tuple[Result, ...]:
        """The failures that count against the answer: any stated example's, and a written
        assertion's only when the code did not run through it (it raised, hung, did not load).
        A written assertion's expected value is often wrong itself (docs/eval/checks.md),
        so a value that differs from it is no fault of the answer's."""
        return tuple(r for r in self.failed() if r.check.origin == "example" or not r.wrong)

    def ran(self, origin: Origin) -> int:
        """How many checks of ``origin`` the code ran through without a fault."""
        faults = self.faults()
        return sum(r not in faults for r in self.results if r.check.origin == origin)

    def passed(self, origin: Origin | None = None) -> int:
        return sum(r.passed for r in self.results if origin is None or r.check.origin == origin)

    def failed(self, origin: Origin | None = None) -> tuple[Result, ...]:
        return tuple(
            r for r in self.results if not r.passed and (origin is None or r.check.origin == origin)
        )

    @property
    def clean(self) -> bool:
        """The code ran and every check passed."""
        return self.refused is None and not self.failed()

    def summary(self) -> dict[str, object]:
        """What the ``booagent`` object shows of the trial."""
        shown: dict[str, object] = {"checks": len(self.results), "passed": self.passed()}
        if len(self.faults()) != len(self.failed()):
            shown["faults"] = len(self.faults())
        if self.refused is not None:
            shown["refused"] = self.refused
        failed = self.failed()
        if failed:
            shown["first_failure"] = failed[0].shown()[:300]
        return shown


def as_assertion(source: str, origin: Origin = "example") -> Assertion | None:
    """A check from Python statements, or ``None`` when they do not parse. A lone
    ``assert a == b`` becomes ``_expect(a, b, ...)`` so that its failure shows what ``a``
    was; floats compare within 1e-6, lists and tuples item by item."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    if not tree.body:
        return None
    shown = ast.unparse(tree)
    single = tree.body[0] if len(tree.body) == 1 else None
    if isinstance(single, ast.Assert) and _is_equality(single.test):
        assert isinstance(single.test, ast.Compare)
        got, want = single.test.left, single.test.comparators[0]
        shown = f"{ast.unparse(got)} == {ast.unparse(want)}"
        call = f"_expect({ast.unparse(got)}, {ast.unparse(want)}, {shown!r})"
        return Assertion(call, origin, shown)
    return Assertion(shown, origin, shown)


def _is_equality(test: ast.expr) -> bool:
    return isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)


async def run_checks(code: str, checks: Sequence[Check], limits: Limits) -> Trial:
    """Run ``code`` against every check: all assertions in one child, each program run in
    its own (a fresh stdin and fresh state)."""
    refused = screen(code, CODE_POLICY)
    if refused is not None:
        return Trial(code, refused=refused.replace("the program", "the code"))
    assertions = [c for c in checks if isinstance(c, Assertion)]
    runs = [c for c in checks if isinstance(c, ProgramRun)]
    results: list[Result] = []
    if assertions:
        results += await _assert_all(code, assertions, limits)
    for run in runs:
        results.append(await _run_program(code, run, limits))
    order = {id(check): index for index, check in enumerate(checks)}
    return Trial(code, tuple(sorted(results, key=lambda r: order[id(r.check)])))


async def _assert_all(code: str, assertions: list[Assertion], limits: Limits) -> list[Result]:
    modules = _modules(code, *(a.source for a in assertions))
    job = dict(code=code, checks=[a.source for a in assertions], stdin="", name="answer")
    lines, ended = await _child(job, modules, limits)
    return _assertion_results(assertions, lines, ended)


def _assertion_results(
    assertions: list[Assertion], lines: dict[int, Reported], ended: str
) -> list[Result]:
    loaded = lines.get(-1)
    if loaded is None or loaded[0] is not None:
        why = f"the code failed before any check: {loaded[0] if loaded else ended}"
        return [Result(a, why) for a in assertions]
    results = []
    for index, assertion in enumerate(assertions):
        found = lines.get(index)
        if found is None:
            results.append(Result(assertion, ended or "did not finish"))
        else:
            results.append(Result(assertion, found[0], found[2]))
    return results


async def _run_program(code: str, run: ProgramRun, limits: Limits) -> Result:
    job = dict(code=code, checks=[], stdin=run.stdin, name="__main__")
    lines, ended = await _child(job, _modules(code), limits)
    found = lines.get(-1)
    if found is None:
        return Result(run, ended or "the program printed nothing")
    failure, printed, _ = found
    if failure is not None:
        return Result(run, failure)
    if _lines(printed) != _lines(run.stdout):
        return Result(run, f"it printed {_clip(printed)!r}", wrong=True)
    return Result(run, None)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def _modules(*sources: str) -> list[str]:
    found: set[str] = set()
    for source in sources:
        try:
            found.update(imported(source))
        except (SyntaxError, ValueError):
            continue
    return sorted(found)


async def _child(
    fields: Mapping[str, object], modules: list[str], limits: Limits
) -> tuple[dict[int, Reported], str]:
    """Run the checks' child; the reported lines by index, and why it ended early (or "")."""
    nonce = os.urandom(16).hex()
    job = child_job(limits, nonce=nonce, modules=modules, **fields)
    lines: dict[int, Reported] = {}
    async with contained(_RUN_CHECKS, "booagent-code-") as child:
        ended = await _read_results(child, job, limits, nonce, lines)
    return lines, ended


async def _read_results(
    child: asyncio.subprocess.Process,
    job: bytes,
    limits: Limits,
    nonce: str,
    lines: dict[int, Reported],
) -> str:
    """Fill ``lines`` as the child reports; why it stopped early, or "" when it finished."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(job)
    child.stdin.close()
    read = 0
    try:
        async with asyncio.timeout(limits.wall_seconds):
            while line := await child.stdout.readline():
                read += len(line)
                if read > limits.output_bytes:
                    return f"the code printed more than {limits.output_bytes} bytes"
                _parse(line, nonce, lines)
            status = await child.wait()
    except TimeoutError:
        return f"ran longer than {limits.wall_seconds:g} s"
    except ValueError:  # a line longer than the stream's limit: not one of ours
        return f"the code printed more than {limits.output_bytes} bytes"
    return "" if status in (0, 1) else status_reason(status)


def _parse(line: bytes, nonce: str, lines: dict[int, Reported]) -> None:
    try:
        found = json.loads(line)
    except ValueError:
        return
    if isinstance(found, list) and len(found) == 5 and found[0] == nonce:
        _, index, failure, printed, wrong = found
        lines[int(index)] = (failure, str(printed), bool(wrong))


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
