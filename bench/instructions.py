"""`booagent bench instructions`: the gateway's own work per request, counted exactly.

Wall-clock figures on a shared two-core VM move by a third between runs (docs/performance.md),
more than most changes to the gateway differ. Instructions do not: the gateway runs under
valgrind's callgrind with counting off, and counting is switched on only around a phase of
requests at concurrency 1 (after a warm-up), so the count is the gateway's own user-space work
for exactly those requests, whatever else the machine is doing. It leaves out the kernel's
share (system calls) and how fast each instruction runs; it is for comparing versions of the
gateway, not for latency.

Per mode (whole, streamed) it reports instructions per request at ``tokens`` tokens, and from
a second streamed phase at ``chunks`` tokens, instructions per relayed chunk.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.load import Target, chat_request, close_connections, open_connections, run_phase
from bench.procs import Processes, Spawned, free_port
from bench.report import Machine, machine
from bench.stack import HOST, VIRTUAL_MODEL, gateway_config

TITLE = "## Gateway instructions per request"
_TOTALS = re.compile(rb"^totals:\s*(\d+)", re.MULTILINE)
_STARTUP = 600.0  # seconds: the gateway starts 30-50 times slower under valgrind

Progress = Callable[[str], None]


class ValgrindMissing(RuntimeError):
    """valgrind is not installed (Debian: ``apt-get install valgrind``)."""


@dataclass(frozen=True, slots=True)
class InstructionsSettings:
    requests: int = 300
    tokens: int = 4
    chunks: int = 100
    warmup: int = 50


@dataclass(frozen=True, slots=True)
class Count:
    """One counted phase: instructions over the requests that all answered."""

    mode: str
    tokens: int
    requests: int
    instructions: int
    errors: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


@dataclass(slots=True)
class InstructionsReport:
    settings: InstructionsSettings
    machine: Machine
    started: datetime.datetime
    counts: list[Count] = field(default_factory=list)

    def count(self, mode: str, tokens: int) -> Count:
        return next(c for c in self.counts if c.mode == mode and c.tokens == tokens)

    @property
    def per_chunk(self) -> float:
        """Instructions per relayed chunk: the long stream's extra work over its extra chunks."""
        s = self.settings
        short, long = self.count("stream", s.tokens), self.count("stream", s.chunks)
        return (long.per_request - short.per_request) / (s.chunks - s.tokens)


class _Callgrind:
    """The gateway under callgrind, counting only between :meth:`start` and :meth:`total`."""

    def __init__(self, procs: Processes, config: Path, port: int) -> None:
        self._out = procs.workdir / "callgrind.out"
        gateway = [sys.executable, "-c", "from gateway.cli import main; main()"]
        self.spawned: Spawned = procs.spawn(
            "gateway",
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={self._out}",
             *gateway, "serve", "--config", str(config)],
            f"http://{HOST}:{port}",
        )  # fmt: skip
        procs.wait_ready(self.spawned, "/ready", timeout=_STARTUP)

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.spawned.pid)], check=True, capture_output=True
        )

    def start(self) -> None:
        self._control("--zero")
        self._control("--instr=on")

    def total(self) -> int:
        """Stop counting, dump, and read the dump's total."""
        self._control("--instr=off")
        before = set(self._out.parent.glob(self._out.name + "*"))
        self._control("--dump")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dumps = set(self._out.parent.glob(self._out.name + "*")) - before
            for dump in dumps:
                found = _TOTALS.search(dump.read_bytes())
                if found:
                    return int(found.group(1))
            time.sleep(0.2)
        raise RuntimeError("callgrind wrote no dump within 30 s")


async def _phase(target: Target, stream: bool, tokens: int, requests: int) -> int:
    """``requests`` requests one at a time; how many failed."""
    connections = await open_connections(target, 1)
    try:
        ask = [chat_request(target, VIRTUAL_MODEL, stream=stream, tokens=tokens)]
        phase = await run_phase(connections, ask, requests)
    finally:
        await close_connections(connections)
    return phase.errors + sum(1 for s in phase.samples if s.status != 200 or s.tokens != tokens)


def _count(
    gateway: _Callgrind, target: Target, mode: str, tokens: int, s: InstructionsSettings
) -> Count:
    stream = mode == "stream"
    asyncio.run(_phase(target, stream, tokens, s.warmup))
    gateway.start()
    errors = asyncio.run(_phase(target, stream, tokens, s.requests))
    return Count(mode, tokens, s.requests, gateway.total(), errors)


def run_instructions(
    settings: InstructionsSettings, progress: Progress | None = None
) -> InstructionsReport:
    """Start the fast upstream and the gateway under callgrind; count each phase; stop both."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise ValgrindMissing(
            "`booagent bench instructions` needs valgrind (apt-get install valgrind)"
        )
    say = progress or (lambda _: None)
    report = InstructionsReport(settings, machine(), datetime.datetime.now().astimezone())
    with (
        tempfile.TemporaryDirectory(prefix="booagent-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        upstream_port, port = free_port(), free_port()
        upstream = procs.spawn(
            "upstream",
            [sys.executable, "-m", "bench.upstream", "--host", HOST, "--port", str(upstream_port)],
            f"http://{HOST}:{upstream_port}",
        )
        procs.wait_ready(upstream, "/health")
        config = procs.workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(port, upstream_port)))
        say("starting the gateway under callgrind (a minute or two)")
        gateway = _Callgrind(procs, config, port)
        target = Target("gateway", HOST, port)
        for mode, tokens in (("whole", settings.tokens), ("stream", settings.tokens),
                             ("stream", settings.chunks)):  # fmt: skip
            count = _count(gateway, target, mode, tokens, settings)
            say(
                f"{mode}, {tokens} tokens: {count.per_request / 1e6:.3f} M instructions per request"
            )
            report.counts.append(count)
    return report


def instructions_markdown(report: InstructionsReport) -> str:
    """The ``## Gateway instructions per request`` section."""
    s = report.settings
    rows = [
        f"| {c.mode} | {c.tokens} | {c.per_request / 1e6:.3f} | {c.errors} |" for c in report.counts
    ]
    return "\n".join(
        [
            TITLE,
            "",
            f"Measured {report.started:%Y-%m-%d %H:%M %Z} with `booagent bench instructions` "
            f"on {report.machine.describe()}.",
            "",
            "The gateway runs under valgrind's callgrind, counting only while "
            f"{s.requests:,} requests go through it one at a time to the fast upstream (after "
            f"{s.warmup} uncounted ones): its own user-space instructions, the same from run to "
            "run whatever else the machine does, so the measure to compare versions by. "
            "System calls and the speed of each instruction are not in it.",
            "",
            "| mode | tokens | M instructions per request | errors |",
            "|---|---|---|---|",
            *rows,
            "",
            f"- Per relayed chunk: **{report.per_chunk / 1e3:.0f}k instructions** (the "
            f"{s.chunks}-token stream against the {s.tokens}-token one).",
            "",
        ]
    )
