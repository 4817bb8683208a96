"""The checks a code request states: its examples, read as assertions or program runs.

People show what a function should do in a handful of ways, and each is read here:

- doctest lines (``>>> f(2)`` then ``4``; an expected exception too), read with the standard
  library's :class:`doctest.DocTestParser`;
- a call, a connecting phrase and a value, inline: ``f(2) == 4``, ``f(2) -> 4``,
  ``f(2) should return 4``, ``calling `f('ab')` gives `'ba'` ``;
- input and output pairs (``Input: nums = [2,7], target = 9`` then ``Output: [0,1]``): a call
  of the function the request names, or, when the request asks for a program that reads its
  input, the text to feed it and the text it must print.

Only concrete examples count: every argument and every expected value must be a Python
literal (``f(n) is the n-th prime`` states nothing checkable). :func:`test_request` asks a
member for assertions when the request states no example, and :func:`written_tests` reads its
answer. Nothing here knows any particular prompt: these are the notations of docstrings,
tutorials and programming-contest statements.
"""

from __future__ import annotations

import ast
import doctest
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ensemble.code_run import Assertion, Check, ProgramRun, as_assertion
from ensemble.signals import extract_code

_OTHER_LANGUAGES = re.compile(
    r"\b(javascript|typescript|node\.?js|java|kotlin|scala|c\+\+|c#|golang|rust|ruby|php|"
    r"swift|perl|haskell|elixir|erlang|lua|julia|matlab|fortran|cobol|bash|shell script|"
    r"powershell|sql|html|css|dart|clojure|ocaml|f#|zig|nim|assembly|verilog|vhdl)\b|"
    r"\bin (c|go|r)\b|\b(c|go|r) (function|program|code)\b",
    re.IGNORECASE,
)
_PYTHON = re.compile(r"\bpython\b|\bdef \w+\(|```py", re.IGNORECASE)
_WRITE = re.compile(
    r"\b(write|implement|create|define|complete|make|build|give me|provide|fix|rewrite|"
    r"refactor|finish|code up)\b",
    re.IGNORECASE,
)
_CODE_NOUN = re.compile(r"\b(function|method|class|program|script|code|solution|generator)\b",
                        re.IGNORECASE)  # fmt: skip
_NAMED = re.compile(
    r"`(?:def\s+)?([A-Za-z_]\w*)\s*\(|\bdef\s+([A-Za-z_]\w*)\s*\(|"
    r"\b(?:function|method|class|called|named)\s+`([A-Za-z_]\w*)`|"
    r"\b(?:function|method|class)\s+([A-Za-z_]\w*)\s*\(",
)
_NOT_ENTRIES = frozenset({
    "print", "input", "len", "range", "int", "str", "list", "dict", "set", "sorted", "sum",
    "max", "min", "abs", "python", "self", "def",
})  # fmt: skip
_WRAPPERS = frozenset({
    "list", "tuple", "set", "frozenset", "dict", "sorted", "reversed", "len", "range", "str",
    "int", "float", "sum", "min", "max", "abs", "round", "bool",
})  # fmt: skip
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_CONNECTOR = re.compile(
    r"\s*`?\s*(==|->|→|=>|=|:|\||should (?:return|be|give|output|print|yield)|must (?:return|be)|"
    r"will return|returns?|gives?|outputs?|evaluates to|results? in|produces?|is)\s*",
    re.IGNORECASE,
)
_PAIR = re.compile(
    r"\binput\s*(?::|\n)\s*(?P<input>.+?)\s*(?:\b(?:expected|sample|example)\s+)?\boutput\s*(?::|\n)\s*"
    r"(?P<output>.+?)"
    r"(?=\n\s*\n|\n\s*(?:explanation|example|sample|input|constraints?|note)\b|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_READS_INPUT = re.compile(
    r"standard input|\bstdin\b|\binput\(\)|reads? (?:the |its )?(?:input|from)|"
    r"from the (?:keyboard|console|user)",
    re.IGNORECASE,
)
_LINE_LIMIT = 300
_MAX_CHECKS = 12


@dataclass(frozen=True, slots=True)
class Stated:
    """What a request states: the functions it names, its examples, and whether it asks for a
    program that reads its input (examples then are program runs)."""

    entries: tuple[str, ...]
    checks: tuple[Check, ...]
    program: bool = False


def python_code_asked(text: str) -> bool:
    """True when the request asks for code to be written and names no language but Python."""
    if not _WRITE.search(text) or not (_CODE_NOUN.search(text) or entries(text)):
        return False
    return bool(_PYTHON.search(text)) or not _OTHER_LANGUAGES.search(text)


def entries(text: str) -> tuple[str, ...]:
    """The functions and classes the request names, in order (``def f(``, `` `f(x)` ``,
    ``function f(``)."""
    found = (next(g for g in m.groups() if g) for m in _NAMED.finditer(text))
    return tuple(dict.fromkeys(n for n in found if n not in _NOT_ENTRIES))


def stated(text: str) -> Stated:
    """The request's functions and its examples as checks (at most a dozen)."""
    names = entries(text)
    program = not names and bool(_READS_INPUT.search(text))
    checks: list[Check] = []
    for check in _examples(text, names, program):
        if check not in checks:
            checks.append(check)
    return Stated(names, tuple(checks[:_MAX_CHECKS]), program)


def _examples(text: str, names: tuple[str, ...], program: bool) -> Iterator[Check]:
    if program:
        yield from _program_runs(text)
        return
    yield from _doctests(text)
    yield from _inline(text)
    if len(names) == 1:
        yield from _pairs(text, names[0])
        yield from _arrows(text, names[0])


def _doctest_blocks(text: str) -> Iterator[str]:
    """Each run of doctest lines, dedented: from a ``>>>`` line through the lines indented as
    far, up to a blank line or a docstring's or fence's end (which the parser would take for
    expected output)."""
    block: list[str] = []
    indent = 0
    for line in [*text.splitlines(), ""]:
        stripped = line.strip()
        ends = not stripped or stripped.startswith(('"""', "'''", "```"))
        if block and (ends or len(line) - len(line.lstrip()) < indent):
            yield "\n".join(block) + "\n"
            block = []
        if not block and stripped.startswith(">>>"):
            indent = len(line) - len(line.lstrip())
        if stripped.startswith(">>>") or (block and not ends):
            block.append(line[indent:])


def _doctests(text: str) -> Iterator[Check]:
    found: list[doctest.Example] = []
    for block in _doctest_blocks(text):
        try:
            found += doctest.DocTestParser().get_examples(block)
        except ValueError:  # inconsistent indentation
            continue
    setup: list[str] = []
    for example in found:
        source = example.source.strip()
        if example.exc_msg is not None:
            check = _raises(setup, source, example.exc_msg)
        elif example.want.strip():
            check = _doctest_check(setup, source, example.want.strip())
        else:
            setup.append(source)
            continue
        if check is not None:
            yield check


def _doctest_check(setup: list[str], source: str, want: str) -> Check | None:
    value = _literal(want)
    try:
        ast.parse(source, mode="eval")
    except SyntaxError:
        return None
    if value is None:
        statement = f"assert repr({source}) == {want!r}"
    else:
        statement = f"assert {source} == {value}"
    if setup:
        return Assertion("\n".join([*setup, _as_expect(statement)]), "example", statement[7:])
    return as_assertion(statement)


def _as_expect(statement: str) -> str:
    made = as_assertion(statement)
    return made.source if made is not None else statement


def _raises(setup: list[str], source: str, message: str) -> Check | None:
    error = message.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    if not error.isidentifier():
        return None
    body = "\n".join(
        [*setup, "try:", f"    {source}", f"except {error}:", "    pass", "else:",
         f"    raise AssertionError('did not raise {error}')"]
    )  # fmt: skip
    try:
        ast.parse(body)
    except SyntaxError:
        return None
    return Assertion(body, "example", f"{source} raises {error}")


def _inline(text: str) -> Iterator[Check]:
    for match in _CALL_START.finditer(text):
        end = _closing(text, match.end() - 1)
        if end is None:
            continue
        call = text[match.start() : end + 1]
        rest = text[end + 1 : end + 1 + _LINE_LIMIT].split("\n", 1)[0]
        connector = _CONNECTOR.match(rest)
        if connector is None or not _concrete_call(call):
            continue
        value = _value(rest[connector.end() :])
        if value is not None:
            check = as_assertion(f"assert {call} == {value}")
            if check is not None:
                yield check


def _closing(text: str, start: int) -> int | None:
    """The index of the bracket that closes the one at ``start`` (strings skipped)."""
    depth, quote, index = 0, "", start
    limit = min(len(text), start + _LINE_LIMIT)
    while index < limit:
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def _concrete_call(call: str) -> bool:
    """A call of a function (not a builtin) with literal arguments, maybe wrapped in harmless
    builtins or given their results: ``f([1, 2])``, ``list(chunked(range(5), 2))``."""
    try:
        node = ast.parse(call, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    names = _called(node)
    return names is not None and any(name not in _WRAPPERS for name in names)


def _called(node: ast.expr) -> list[str] | None:
    """The functions a concrete expression calls, or None when it is not concrete (a name
    that is not called, a call of an attribute, a starred or unnamed argument)."""
    if _is_literal(node):
        return []
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    names = [node.func.id]
    for argument in [*node.args, *(k.value for k in node.keywords)]:
        inner = _called(argument)
        if inner is None:
            return None
        names += inner
    return names if all(k.arg for k in node.keywords) else None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _value(text: str) -> str | None:
    """The Python literal that starts ``text`` (in backticks, or the longest that parses),
    as source."""
    text = text.strip()
    if text.startswith("`"):
        inner = text[1:].split("`", 1)[0]
        return _literal(inner)
    cut = text[:_LINE_LIMIT]
    for end in range(len(cut), 0, -1):
        if end < len(cut) and (cut[end].isalnum() or cut[end] == "_") and cut[end - 1].isalnum():
            continue  # not at a word's end
        found = _literal(cut[:end])
        if found is not None:
            return found
    return None


def _literal(text: str) -> str | None:
    """``text`` as the source of the literal it is (trailing punctuation ignored), or None."""
    text = text.strip().rstrip(".,;:!").strip()
    if not text:
        return None
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not _is_literal(node):
        return None
    return ast.unparse(node)


def _pairs(text: str, entry: str) -> Iterator[Check]:
    for match in _PAIR.finditer(text):
        arguments = _arguments(match.group("input"))
        value = _literal(_strip_ticks(match.group("output").split("\n", 1)[0]))
        if arguments is not None and value is not None:
            check = as_assertion(f"assert {entry}({arguments}) == {value}")
            if check is not None:
                yield check


_ARROW_LINE = re.compile(
    r"^\s*(?:[-*•]|\d+[.)])?\s*(?P<given>.+?)\s*(?:→|->|=>)\s*(?P<result>.+?)\s*$", re.MULTILINE
)
_QUOTED = r"'[^'\n]*'|\"[^\"\n]*\""
_BECOMES = re.compile(rf"(?P<given>{_QUOTED})\s+becomes\s+(?P<result>{_QUOTED})")


def _arrows(text: str, entry: str) -> Iterator[Check]:
    """``'abc' -> 'cba'`` on a line of its own (a bullet, a numbered line), or ``'aab' becomes
    'a2b1'``: the one named function's argument and result."""
    for match in [*_ARROW_LINE.finditer(text), *_BECOMES.finditer(text)]:
        given = _literal(_strip_ticks(match.group("given")))
        result = _literal(_strip_ticks(match.group("result")))
        if given is not None and result is not None:
            check = as_assertion(f"assert {entry}({given}) == {result}")
            if check is not None:
                yield check


def _arguments(text: str) -> str | None:
    """``nums = [2,7], target = 9`` or ``[2,7], 9`` (one line) as positional arguments."""
    text = _strip_ticks(text)
    if not text or "\n" in text:
        return None
    try:
        node = ast.parse(f"_({text})", mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(node, ast.Call):
        return None
    values = [*node.args, *(k.value for k in node.keywords)]
    if not values or not all(_is_literal(v) for v in values):
        return None
    return ", ".join(ast.unparse(v) for v in values)


def _strip_ticks(text: str) -> str:
    return text.strip().strip("`").strip()


def _program_runs(text: str) -> Iterator[Check]:
    for match in _PAIR.finditer(text):
        given = _block(match.group("input"))
        expected = _block(match.group("output"))
        if given and expected:
            yield ProgramRun(given + "\n", expected + "\n")


def _block(text: str) -> str:
    """A sample's text: inside its fence or backticks when it has them, else as written."""
    fenced = re.search(r"```[^\n]*\n(.*?)```", text, re.DOTALL)
    body = fenced.group(1) if fenced else text.strip().strip("`")
    return "\n".join(line.rstrip() for line in body.strip("\n").splitlines()).strip()


TEST_INSTRUCTION = (
    'A programming task:\n\n"""\n{task}\n"""\n\nDo not solve the task. Instead write 3 to 5 test '
    "assertions for {entry}, each one line of the form "
    "`assert {name}(<arguments>) == <expected result>` with concrete values, one of them an "
    "edge case. Reply with only the assert lines in a Python code block."
)
"""The task comes first and the instruction last: small models follow the last instruction they
read, and a task often ends with one of its own ("reply with only the code")."""


def test_request(task: str, entry: str) -> str:
    """The message asking a member for assertions about ``entry``."""
    return TEST_INSTRUCTION.format(entry=f"`{entry}`", name=entry, task=task)


def written_tests(answer: str, names: tuple[str, ...], limit: int = 5) -> tuple[Assertion, ...]:
    """The top-level ``assert`` statements of a member's answer that use one of ``names``."""
    try:
        tree = ast.parse(extract_code(answer))
    except (SyntaxError, ValueError):
        return ()
    found: list[Assertion] = []
    for node in tree.body:
        if not isinstance(node, ast.Assert) or not _uses(node, names):
            continue
        check = as_assertion(ast.unparse(node), "generated")
        if check is not None and check not in found:
            found.append(check)
    return tuple(found[:limit])


def defined_names(code: str) -> tuple[str, ...]:
    """The functions and classes ``code`` defines at its top level, in order (none when it
    does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ()
    kinds = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    return tuple(node.name for node in tree.body if isinstance(node, kinds))


def _uses(node: ast.AST, names: tuple[str, ...]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))
