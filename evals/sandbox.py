"""Run untrusted answer code plus hidden asserts in a throwaway Python subprocess.

Containment, in layers:

- ``python -I -S`` (isolated: no site, no ``PYTHON*`` variables, no cwd on ``sys.path``) in
  an empty temporary directory, with an empty environment and stdin closed;
- no network: under ``unshare -n`` (a fresh network namespace with no interfaces up) when this
  machine allows it, and in every case a preamble that replaces ``socket.socket`` and friends
  with functions that raise, so ordinary library calls cannot connect either;
- resource limits set in the child (CPU seconds, address space, file size, open files);
- a wall-clock timeout that kills the child's whole process group.

The preamble, the network jail and the limits are :mod:`ensemble.sandbox`'s, where the
``program`` strategy runs model-written programs (with more layers: see there).

This is a guard against mistakes of small models (endless loops, stray downloads), not a
security boundary against hostile code.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass

from ensemble.sandbox import CHILD_ENV, Limits, child_command, child_job, kill_group

_MEMORY_BYTES = 1 << 30
_FILE_BYTES = 10 << 20

# After the shared preamble (limits, no network): run the answer's code, then each test. The
# nonce (unknown to the answer's code) is printed on the real stdout only after every test
# passed, so an early `sys.exit(0)` in the answer cannot pass for success.
_RUN_TESTS = r"""
real_stdout = sys.stdout
sys.stdout = sys.stderr = open(os.devnull, "w")
# A real module, so that what looks its module up (dataclasses with string annotations) works.
import types
module = types.ModuleType("answer")
sys.modules["answer"] = module
namespace = module.__dict__
stage = "answer code"
try:
    exec(compile(job["code"], "<answer>", "exec"), namespace)
    for number, test in enumerate(job["tests"], 1):
        stage = f"test {number}"
        exec(compile(test, f"<test {number}>", "exec"), namespace)
except BaseException as exc:
    real_stdout.write(f"{stage}: {type(exc).__name__}: {str(exc)[:200]}\n")
    real_stdout.flush()
    os._exit(1)
real_stdout.write(job["nonce"] + "\n")
real_stdout.flush()
os._exit(0)
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """``passed`` when the code ran and every test passed; ``detail`` says why not."""

    passed: bool
    detail: str


def run_tests(code: str, tests: tuple[str, ...], timeout: float = 5.0) -> Outcome:
    """Run ``code`` then each assert of ``tests`` in one sandboxed child, within ``timeout`` s."""
    nonce = secrets.token_hex(16)
    limits = Limits(int(timeout) + 1, memory_bytes=_MEMORY_BYTES, file_bytes=_FILE_BYTES)
    job = child_job(limits, code=code, tests=list(tests), nonce=nonce)
    with tempfile.TemporaryDirectory(prefix="booagent-eval-") as workdir:
        child = subprocess.Popen(
            child_command(_RUN_TESTS),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=CHILD_ENV,
            start_new_session=True,
        )
        try:
            out, err = child.communicate(job, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(child.pid)
            child.communicate()
            return Outcome(False, f"timed out after {timeout:g} s")
        kill_group(child.pid)  # anything the answer left running in the background
    lines = out.decode(errors="replace").strip().splitlines()
    if child.returncode == 0 and lines and lines[-1] == nonce:
        return Outcome(True, "all tests passed")
    reason = lines[-1] if lines else err.decode(errors="replace").strip()[-200:]
    return Outcome(False, reason or f"exit status {child.returncode}")
