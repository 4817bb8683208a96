"""The processes a benchmark runs: the fast upstream and the gateway, each in its own group.

:class:`Processes` starts them with their output in a work folder, waits until they answer, and
on leaving (however the benchmark ends) sends SIGTERM to each process group, then SIGKILL to
what is left, and reaps them: no orphans. Children also get SIGTERM if the benchmark itself is
killed (``PR_SET_PDEATHSIG`` on Linux). CPU time and memory are read from ``/proc/<pid>``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from backends.supervisor import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection takes it meanwhile."""
    low, _ = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free port found")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@dataclass(frozen=True, slots=True)
class Spawned:
    """A process the benchmark started."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Starts processes and guarantees they are gone when the block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.spawned: list[Spawned] = []

    def spawn(self, name: str, argv: Sequence[str], url: str) -> Spawned:
        log = self.workdir / f"{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), _pythonpath()])),
        }
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                preexec_fn=die_with_parent(),
            )
        spawned = Spawned(name, popen, log, url)
        self.spawned.append(spawned)
        return spawned

    def wait_ready(self, spawned: Spawned, path: str, timeout: float = 30.0) -> None:
        """Poll ``path`` until it answers 200; fail with the process's output if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if spawned.popen.poll() is not None:
                raise RuntimeError(f"{spawned.name} exited early:\n{spawned.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(spawned.url + path, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{spawned.name} not ready within {timeout} s:\n{spawned.tail()}")

    def close(self) -> None:
        """SIGTERM every group, give them 5 s, SIGKILL the rest, reap all."""
        for spawned in self.spawned:
            _signal_group(spawned.popen, signal.SIGTERM)
        for spawned in self.spawned:
            try:
                spawned.popen.wait(5)
            except subprocess.TimeoutExpired:
                _signal_group(spawned.popen, signal.SIGKILL)
                spawned.popen.wait()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)
