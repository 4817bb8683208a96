"""Run untrusted answer code plus hidden asserts in a throwaway Python subprocess.

Containment, in layers:

- ``python -I`` (isolated: no user site, no ``PYTHON*`` variables, no cwd on ``sys.path``) in
  an empty temporary directory, with an empty environment and stdin closed;
- no network: under ``unshare -n`` (a fresh network namespace with no interfaces up) when this
  machine allows it, and in every case a preamble that replaces ``socket.socket`` and friends
  with functions that raise, so ordinary library calls cannot connect either;
- resource limits set in the child (CPU seconds, address space, file size, open files);
- a wall-clock timeout that kills the child's whole process group.

This is a guard against mistakes of small models (endless loops, stray downloads), not a
security boundary against hostile code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_MEMORY_BYTES = 1 << 30
_FILE_BYTES = 10 << 20

# The child reads {"code", "tests", "nonce", "cpu"} as JSON from stdin. It prints the nonce
# (unknown to the answer's code) on its real stdout only after every test passed, so an early
# `sys.exit(0)` in the answer cannot pass for success.
_CHILD = r"""
import json, os, resource, socket, sys
job = json.loads(sys.stdin.read())
cpu = job["cpu"]
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (__MEMORY__, __MEMORY__))
resource.setrlimit(resource.RLIMIT_FSIZE, (__FSIZE__, __FSIZE__))
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
real_stdout = sys.stdout
sys.stdout = sys.stderr = open(os.devnull, "w")
sys.stdin = open(os.devnull)
namespace = {"__name__": "answer", "__builtins__": __builtins__}
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
""".replace("__MEMORY__", str(_MEMORY_BYTES)).replace("__FSIZE__", str(_FILE_BYTES))


@dataclass(frozen=True, slots=True)
class Outcome:
    """``passed`` when the code ran and every test passed; ``detail`` says why not."""

    passed: bool
    detail: str


@functools.cache
def _network_jail() -> tuple[str, ...]:
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


def run_tests(code: str, tests: tuple[str, ...], timeout: float = 5.0) -> Outcome:
    """Run ``code`` then each assert of ``tests`` in one sandboxed child, within ``timeout`` s."""
    nonce = secrets.token_hex(16)
    job = json.dumps({"code": code, "tests": list(tests), "nonce": nonce, "cpu": int(timeout) + 1})
    command = [*_network_jail(), sys.executable, "-I", "-c", _CHILD]
    with tempfile.TemporaryDirectory(prefix="booagent-eval-") as workdir:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        try:
            out, err = child.communicate(job.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            child.communicate()
            return Outcome(False, f"timed out after {timeout:g} s")
        _kill_group(child)  # anything the answer left running in the background
    lines = out.decode(errors="replace").strip().splitlines()
    if child.returncode == 0 and lines and lines[-1] == nonce:
        return Outcome(True, "all tests passed")
    reason = lines[-1] if lines else err.decode(errors="replace").strip()[-200:]
    return Outcome(False, reason or f"exit status {child.returncode}")


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill the child's process group: the child and anything it spawned."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
