"""Running a short model-written Python program, contained, and reading what it printed.

The ``program`` strategy asks a coder member for a program that computes an answer and runs it
here. The program is untrusted text from a small model, so it goes through two layers:

- :func:`screen` reads its syntax tree before anything runs: imports only from
  :data:`ALLOWED_MODULES` (arithmetic and data-structure modules of the standard library), no
  attribute that starts with ``_`` (the ways out of a restricted namespace go through dunders
  such as ``__class__`` and through modules' private names such as ``random._os``), no name
  that starts with ``__``, and none of the builtins that reach the outside or the interpreter
  (``open``, ``eval``, ``exec``, ``getattr``, ``input`` ...);
- :func:`run_program` runs a program that passed in a fresh ``python -I -S`` subprocess: an
  empty temporary directory, an empty environment, stdin closed, no network (a fresh network
  namespace under ``unshare -n`` where the machine allows it, and sockets replaced by functions
  that raise in every case), resource limits (CPU seconds, address space, no files written,
  few open files), a wall-clock limit that kills the child's whole process group, and a cap on
  the output read back.

The eval harness (:mod:`evals.sandbox`) runs its hidden tests under the same child preamble,
and the ``tested`` strategy (:mod:`ensemble.code_run`) runs answers to code requests with
:data:`CODE_POLICY`: ordinary code needs private attributes (``self._items``,
``super().__init__``), ``__name__``, ``input`` and a few more harmless modules. Its containment
is the child's: the audit hook, the limits and the network jail, which the screen only
front-runs.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

ALLOWED_MODULES = frozenset(
    {
        "math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
        "collections", "operator", "datetime", "calendar", "string", "re", "random",
    }
)  # fmt: skip
FORBIDDEN_NAMES = frozenset(
    {
        "open", "eval", "exec", "compile", "input", "breakpoint", "help", "globals", "locals",
        "vars", "getattr", "setattr", "delattr", "exit", "quit",
    }
)  # fmt: skip

# The child reads {"code", "cpu", "memory", "files"} as JSON on stdin, sets its limits, cuts the
# network off, then runs the code with stdout going to the real stdout. Shared with the eval
# harness, which appends its own runner after this preamble.
CHILD_PREAMBLE = r"""
import json, os, resource, socket, sys
job = json.loads(sys.stdin.read())
resource.setrlimit(resource.RLIMIT_CPU, (job["cpu"], job["cpu"] + 1))
resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
resource.setrlimit(resource.RLIMIT_FSIZE, (job["files"], job["files"]))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the sandbox")

class _NoSocket:
    def __new__(cls, *args, **kwargs):
        _no_network()

socket.socket = _NoSocket
socket.SocketType = _NoSocket
for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
    setattr(socket, _name, _no_network)
sys.stdin = open(os.devnull)
"""

# After the preamble: import the allowed modules while imports still work, then install an
# audit hook (PEP 578; Python code cannot remove one) that refuses every event but the few a
# computation raises. Opening a file, importing anything new, starting a process, reading a
# frame (``gi_frame``, ``f_back``: the way out to the preamble's ``os``) all raise inside the
# program. Its failure is reported after a nonce line the program cannot know.
_RUN_PROGRAM = r"""
sys.stderr = open(os.devnull, "w")
for _module in job["modules"]:
    __import__(_module)
_ALLOWED_EVENTS = frozenset({"exec", "compile", "builtins.id", "object.__setattr__",
                             "object.__delattr__"})

def _refuse(event, args):
    if event not in _ALLOWED_EVENTS:
        raise RuntimeError(f"{event} is not allowed in the sandbox")

_stdout, _exit, _nonce = sys.stdout, os._exit, job["nonce"]
code = compile(job["code"], "<program>", "exec")
del job
sys.addaudithook(_refuse)
try:
    exec(code, {"__name__": "__main__"})
except BaseException as exc:
    _stdout.flush()
    _stdout.write(f"\n{_nonce} {type(exc).__name__}: {str(exc)[:200]}\n")
    _stdout.flush()
    _exit(1)
_stdout.flush()
_exit(0)
"""


@dataclass(frozen=True, slots=True)
class Policy:
    """What :func:`screen` lets through: modules a program may import, builtins and names it
    may not use, and whether it may name private attributes and dunders."""

    modules: frozenset[str] = ALLOWED_MODULES
    forbidden: frozenset[str] = FORBIDDEN_NAMES
    private: bool = False


STRICT = Policy()
CODE_POLICY = Policy(
    modules=ALLOWED_MODULES | {
        "heapq", "bisect", "typing", "dataclasses", "enum", "json", "textwrap", "unicodedata",
        "copy", "array", "numbers", "abc", "sys", "io", "contextlib", "difflib", "base64",
        "binascii", "hashlib", "struct", "pprint", "time", "__future__",
    },
    forbidden=(FORBIDDEN_NAMES - {"input"}) | {"__import__", "__builtins__", "__loader__"},
    private=True,
)  # fmt: skip
"""Ordinary code: reads stdin, names private attributes, imports harmless modules."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use: CPU and wall seconds, memory, bytes it may write to files, bytes
    of output read back."""

    cpu_seconds: int = 2
    wall_seconds: float = 5.0
    memory_bytes: int = 512 << 20
    output_bytes: int = 64 << 10
    file_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ProgramRun:
    """What a run printed, and why it failed (``error`` is ``None`` when it exited cleanly)."""

    output: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def screen(code: str, policy: Policy = STRICT) -> str | None:
    """Why ``code`` may not run (a syntax error, an import, a name), or ``None`` when it may."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        return f"the program does not parse: {exc}"
    for node in ast.walk(tree):
        found = _forbidden(node, policy)
        if found is not None:
            return found
    return None


LOADED_ON_USE = {"datetime": ("_strptime",), "time": ("_strptime",)}
"""Allowed modules that import another only when first used (``datetime.strptime`` imports
``_strptime``): those are loaded with them, since the audit hook refuses any import once the
code runs."""


def with_loaded_on_use(modules: Iterable[str]) -> list[str]:
    """``modules`` and what they import only when used (:data:`LOADED_ON_USE`), sorted."""
    found = set(modules)
    for module in list(found):
        found.update(LOADED_ON_USE.get(module.partition(".")[0], ()))
    return sorted(found)


_PROGRAM_MODULES = with_loaded_on_use(ALLOWED_MODULES)
"""What a math program's child loads before its audit hook goes in."""


def imported(code: str) -> list[str]:
    """The modules a program that passed :func:`screen` imports (to load before it runs),
    with what they import only when used."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return with_loaded_on_use(found)


def _forbidden(node: ast.AST, policy: Policy) -> str | None:
    if isinstance(node, ast.Import | ast.ImportFrom):
        return _forbidden_import(node, policy)
    if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not policy.private:
        return f"the program uses {node.attr!r}"  # ``random._os``, ``x.__class__``
    if isinstance(node, ast.Name) and _forbidden_name(node.id, policy):
        return f"the program uses {node.id!r}"
    return None


def _forbidden_name(name: str, policy: Policy) -> bool:
    return name in policy.forbidden or (name.startswith("__") and not policy.private)


def _forbidden_import(node: ast.Import | ast.ImportFrom, policy: Policy) -> str | None:
    if isinstance(node, ast.ImportFrom):
        names = [node.module or ""] if node.level == 0 else ["." * node.level]
        names += [a.name for a in node.names if a.name.startswith("_")]
    else:
        names = [alias.name for alias in node.names]
    bad = [n for n in names if not _allowed_module(n, policy)]
    return f"the program imports {bad[0]!r}" if bad else None


def _allowed_module(name: str, policy: Policy) -> bool:
    """An allowed module or one of its submodules; a private name only when it is listed
    (``__future__``)."""
    if name in policy.modules:
        return True
    return not name.startswith((".", "_")) and name.partition(".")[0] in policy.modules


@functools.cache
def network_jail() -> tuple[str, ...]:
    """The ``unshare`` prefix that works here (root: ``-n``; else user namespaces), or none."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for flags in (("-n",), ("-r", "-n")):
        try:
            probe = subprocess.run(
                [unshare, *flags, "true"], capture_output=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return (unshare, *flags)
    return ()


def child_command(runner: str) -> list[str]:
    """The child's command line: the jail, then an isolated interpreter running ``runner``."""
    return [*network_jail(), sys.executable, "-I", "-S", "-B", "-c", CHILD_PREAMBLE + runner]


def child_job(limits: Limits, **fields: object) -> bytes:
    """The JSON job a child reads on stdin: its limits plus ``fields``."""
    job: dict[str, object] = {
        "cpu": limits.cpu_seconds, "memory": limits.memory_bytes, "files": limits.file_bytes
    }  # fmt: skip
    job.update(fields)
    return json.dumps(job).encode()


CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def kill_group(pid: int) -> None:
    """Kill a child's process group: the child and anything it spawned."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def contained(runner: str, prefix: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child running ``runner`` after the preamble (:func:`child_command`) in an empty
    temporary directory, with an empty environment; when the block ends it is killed with its
    process group and its output read to the end (asyncio's ``wait()`` also waits for the pipe
    to close, and a pipe left unread past its buffer's limit never does)."""
    # The first call probes `unshare` with subprocess.run: not on the event loop.
    command = await asyncio.to_thread(child_command, runner)
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        child = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=workdir,
            env=CHILD_ENV,
            start_new_session=True,
        )
        try:
            yield child
        finally:
            kill_group(child.pid)
            await child.communicate()


async def run_program(code: str, limits: Limits = Limits()) -> ProgramRun:
    """Screen ``code``, run it in a contained child, and return what it printed."""
    refused = screen(code)
    if refused is not None:
        return ProgramRun("", refused)
    nonce = os.urandom(16).hex()
    async with contained(_RUN_PROGRAM, "booagent-program-") as child:
        job = child_job(limits, code=code, nonce=nonce, modules=_PROGRAM_MODULES)
        return await _outcome(child, job, limits, nonce)


async def _outcome(
    child: asyncio.subprocess.Process, job: bytes, limits: Limits, nonce: str
) -> ProgramRun:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(job)
    child.stdin.close()
    try:
        async with asyncio.timeout(limits.wall_seconds):
            out = await _read_at_most(child.stdout, limits.output_bytes + 1)
            if len(out) > limits.output_bytes:
                return ProgramRun("", f"the program printed more than {limits.output_bytes} bytes")
            status = await child.wait()
    except TimeoutError:
        return ProgramRun("", f"the program ran longer than {limits.wall_seconds:g} s")
    text = out.decode(errors="replace")
    if status == 0:
        return ProgramRun(text)
    printed, _, failure = text.rpartition(f"\n{nonce} ")
    if failure:
        return ProgramRun(printed, failure.strip())
    return ProgramRun(text, f"the program {status_reason(status)}")


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to end of file, or the first ``limit`` bytes."""
    data = b""
    while len(data) < limit:
        more = await stream.read(limit - len(data))
        if not more:
            break
        data += more
    return data


def status_reason(status: int) -> str:
    """Why a child ended with ``status`` (a signal when negative), as a predicate."""
    if status == -signal.SIGXCPU:
        return "used up its CPU time"
    if status < 0:
        return f"was killed ({signal.Signals(-status).name})"
    return f"exited with status {status}"
