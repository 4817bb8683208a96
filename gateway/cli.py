"""The ``booagent`` command: ``up``, ``serve``, ``models pull`` and ``eval``.

``up`` starts one ``llama_cpp.server`` process per local node, waits until they answer, then
serves the gateway in the same event loop; Ctrl-C or SIGTERM stops the gateway and then every
node. ``serve`` runs only the gateway, for nodes that run elsewhere. ``eval`` scores models
through a running gateway (the harness lives in :mod:`evals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import structlog
import uvicorn

from backends.config import Member
from backends.errors import BooagentError
from backends.models import RichProgress, lookup, pull
from backends.supervisor import NodeSupervisor, llama_cpp_commands
from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.loop import run
from gateway.settings import DEFAULT_CONFIG, Settings, load_settings

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Cluster configuration (YAML).",
)


def _load(config_path: Path) -> Settings:
    try:
        return load_settings(config_path, os.environ)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def main() -> None:
    """booagent-cluster: a few llama.cpp nodes behind one OpenAI-compatible endpoint."""
    configure_logging()


@main.group()
def models() -> None:
    """Manage the GGUF model files of local nodes."""


@models.command("pull")
@_config_option
@click.argument("names", nargs=-1)
def models_pull(config_path: Path, names: tuple[str, ...]) -> None:
    """Fetch, assemble and verify models (default: those the config's members use)."""
    settings = _load(config_path)
    wanted = names or tuple(m.model for m in settings.members if m.model)
    try:
        with RichProgress() as progress:
            paths = pull(settings.models_path, wanted, progress=progress)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    for path in paths:
        click.echo(f"ready: {path}")


def _model_file(settings: Settings) -> dict[str, Path]:
    return {
        m.name: settings.models_path / lookup(m.model).filename for m in settings.members if m.model
    }


def _check_models(settings: Settings) -> Mapping[str, Path]:
    files = _model_file(settings)
    local = {n.member for n in settings.nodes if n.local is not None}
    missing = [str(files.get(m, m)) for m in local if m not in files or not files[m].exists()]
    if missing:
        raise click.ClickException(
            "missing model files: " + ", ".join(missing) + "; run `booagent models pull` first"
        )
    return files


def _banner(settings: Settings) -> str:
    host, port = settings.server.host, settings.server.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}/v1"
    model = settings.server.virtual_model
    return (
        f"\nbooagent-cluster is ready at {base}\n"
        f"  models:  curl {base}/models\n"
        f"  chat:    curl {base}/chat/completions -H 'Content-Type: application/json' \\\n"
        f'             -d \'{{"model": "{model}", "messages": '
        f'[{{"role": "user", "content": "Hello!"}}]}}\'\n'
        "  Ctrl-C stops the gateway and every node it started.\n"
    )


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the caller decides what a signal stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Stopper:
    """SIGINT/SIGTERM handler: cancels start-up, or asks a serving gateway to shut down."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.server: uvicorn.Server | None = None
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        if self.server is None:
            if self.task is not None:
                self.task.cancel()
        elif self.server.should_exit:
            self.server.force_exit = True
        else:
            self.server.should_exit = True

    async def serve(self, server: uvicorn.Server) -> None:
        self.server = server
        await server.serve()


async def _serve(settings: Settings) -> None:
    with _Stopper() as stopper:
        await stopper.serve(_server(settings))


def _server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    return _Server(config)


@main.command()
@_config_option
def serve(config_path: Path) -> None:
    """Run only the gateway, against nodes that run elsewhere."""
    settings = _load(config_path)
    click.echo(_banner(settings))
    run(_serve(settings))


@main.command()
@_config_option
@click.option(
    "--ready-timeout", default=300.0, show_default=True, help="Seconds to wait for nodes."
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("~/.cache/booagent/logs"),
    show_default=True,
    help="Where each node's output goes.",
)
def up(config_path: Path, ready_timeout: float, log_dir: Path) -> None:
    """Start the local nodes, wait until they are ready, then serve the gateway."""
    settings = _load(config_path)
    files = _check_models(settings)
    try:
        run(_up(settings, files, ready_timeout, log_dir.expanduser()))
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("stopped before the nodes were ready", err=True)


async def _up(
    settings: Settings, files: Mapping[str, Path], ready_timeout: float, log_dir: Path
) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    members = {m.name: m for m in settings.members}

    def model_path(member: Member) -> Path:
        return files[member.name]

    command = llama_cpp_commands(members, model_path, python=sys.executable)
    log = structlog.get_logger("booagent.up")
    with _Stopper() as stopper:
        async with NodeSupervisor(settings.nodes, command, log_dir) as supervisor:
            log.info("nodes_starting", nodes=list(supervisor.states()), log_dir=str(log_dir))
            await supervisor.wait_ready(ready_timeout)
            log.info("nodes_ready", nodes=list(supervisor.states()))
            click.echo(_banner(settings))
            await stopper.serve(_server(settings))
            log.info("stopping", nodes=list(supervisor.states()))


@main.command("eval")
@click.option("--against", required=True, help="Gateway URL, e.g. http://127.0.0.1:8100.")
@click.option("--strategies", multiple=True, help="Strategy models (e.g. route,cascade; all).")
@click.option("--members", multiple=True, help="Member models by name (comma-separated; all).")
@click.option("--split", default="test", show_default=True, help="dev, test or all.")
@click.option("--kinds", multiple=True, help="code, math, fact, format (default: all).")
@click.option("--limit", type=int, default=None, help="At most N items per kind.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/eval"))
@click.option(
    "--cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("~/.cache/booagent/eval.sqlite3"),
    show_default=True,
    help="Answers already given are read from here instead of asking again.",
)
@click.option("--api-key", envvar="BOOAGENT_EVAL_API_KEY", default="unused")
@click.option("--quiet", is_flag=True, help="No line per answer.")
def eval_(**options: Any) -> None:
    """Score models on the task suite through the gateway's HTTP API; write a report."""
    try:
        from evals.command import EvalError, EvalOptions, evaluate
    except ImportError as exc:
        raise click.ClickException(
            f"`booagent eval` needs the eval extra (pip install 'booagent-cluster[eval]'): {exc}"
        ) from exc
    try:
        evaluate(EvalOptions(**options), echo=click.echo)
    except EvalError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group("bench")
def bench_group() -> None:
    """Benchmarks: what the gateway costs, against a fast upstream on loopback; how the real
    cluster performs (``cluster``) and survives nodes dying (``chaos``).

    Each prints its figures and writes them to a markdown file (exit 0; the figures are
    reported, not asserted).
    """


_out_option = click.option(
    "--out",
    default="docs/performance.md",
    show_default=True,
    help="Markdown file whose section is created or replaced; '-' writes none.",
)


@bench_group.command("overhead")
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Requests per load level and target (direct, through the gateway).",
)
@click.option(
    "--concurrency",
    default="1,16,64",
    show_default=True,
    help="Comma-separated concurrency levels.",
)
@click.option(
    "--chunks",
    type=click.IntRange(5),
    default=100,
    show_default=True,
    help="Tokens of the long stream that measures the per-chunk relay cost.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Interleaved rounds per level (direct and gateway alternate).",
)
@_out_option
def bench_overhead(requests: int, concurrency: str, chunks: int, rounds: int, out: str) -> None:
    """Added latency, throughput, CPU and memory of the gateway, direct vs through it."""
    from bench.overhead import OverheadSettings, concurrency_levels, run_overhead
    from bench.render import overhead_markdown
    from bench.report import publish

    try:
        levels = concurrency_levels(concurrency)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--concurrency") from exc
    settings = OverheadSettings(requests, levels, chunks, rounds)
    report = run_overhead(settings, progress=lambda line: click.echo(line, err=True))
    click.echo(publish(overhead_markdown(report), out))


@bench_group.command("memory")
@click.option("--requests", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=16, show_default=True)
@click.option(
    "--interval",
    type=click.FloatRange(0.05),
    default=1.0,
    show_default=True,
    help="Seconds between RSS samples.",
)
@_out_option
def bench_memory(requests: int, concurrency: int, interval: float, out: str) -> None:
    """Gateway RSS over a long run of requests: first minute against last minute."""
    from bench.memory import MemorySettings, memory_markdown, run_memory
    from bench.report import publish

    settings = MemorySettings(requests, concurrency, interval)
    report = run_memory(settings, progress=lambda line: click.echo(line, err=True))
    click.echo(publish(memory_markdown(report), out))


@bench_group.command("instructions")
@click.option("--requests", type=click.IntRange(1), default=300, show_default=True,
              help="Counted requests per phase (one at a time).")  # fmt: skip
@click.option("--chunks", type=click.IntRange(5), default=100, show_default=True,
              help="Tokens of the long stream that gives the per-chunk count.")  # fmt: skip
@_out_option
def bench_instructions(requests: int, chunks: int, out: str) -> None:
    """The gateway's instructions per request and per chunk, under callgrind (exact)."""
    from bench.instructions import (
        InstructionsSettings,
        ValgrindMissing,
        instructions_markdown,
        run_instructions,
    )
    from bench.report import publish

    settings = InstructionsSettings(requests=requests, chunks=chunks)
    try:
        report = run_instructions(settings, progress=lambda line: click.echo(line, err=True))
    except ValgrindMissing as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(publish(instructions_markdown(report), out))


@bench_group.command("cluster")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Cluster to start (its ports are replaced by free ones).",
)
@click.option("--concurrency", default="1,2,4,8", show_default=True, help="Comma-separated levels.")
@click.option("--duration-per-level", "duration", type=click.FloatRange(1), default=60.0,
              show_default=True, help="Seconds of load per level.")  # fmt: skip
@click.option("--model", default="booagent-cluster:route", show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=96, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("docs/cluster-bench"), show_default=True)  # fmt: skip
def bench_cluster(
    config_path: Path, concurrency: str, duration: float, model: str, max_tokens: int, out: Path
) -> None:
    """The real local cluster under a mixed workload at rising concurrency."""
    try:
        from bench.cluster import ClusterSettings, run_cluster
        from bench.cluster_report import write_report
    except ImportError as exc:
        raise click.ClickException(
            f"`booagent bench cluster` needs the eval extra (openai, matplotlib): {exc}"
        ) from exc
    from bench.live import BenchError
    from bench.overhead import concurrency_levels

    try:
        levels = concurrency_levels(concurrency)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--concurrency") from exc
    settings = ClusterSettings(config_path, levels, duration, model, max_tokens)
    try:
        report = run_cluster(settings)
    except (BenchError, BooagentError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(write_report(report, out))
    click.echo(f"(written to {out})")


@bench_group.command("chaos")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=Path(__file__).resolve().parent.parent / "config" / "chaos.yaml",
    show_default=True,
    help="Cluster to start (its ports are replaced by free ones).",
)
@click.option("--duration", type=click.FloatRange(5), default=300.0, show_default=True)
@click.option("--kill-every", default="10-30", show_default=True,
              help="Seconds between kills, LOW-HIGH (drawn uniformly, seeded).")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--spare", is_flag=True, help="Only kill while another node has been up a while.")
@click.option("--out", default="docs/chaos.md", show_default=True, help="'-' writes none.")
def bench_chaos(
    config_path: Path, duration: float, kill_every: str, concurrency: int, seed: int,
    spare: bool, out: str,
) -> None:  # fmt: skip
    """Sustained mixed load while real nodes are SIGKILLed and restarted at random."""
    from bench.chaos import ChaosSettings, kill_range, run_chaos
    from bench.chaos_report import chaos_markdown, write_chaos
    from bench.live import BenchError

    try:
        every = kill_range(kill_every)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kill-every") from exc
    settings = ChaosSettings(config_path, duration, every, concurrency, seed, spare=spare)
    try:
        report = run_chaos(settings, echo=lambda line: click.echo(line, err=True))
    except (BenchError, BooagentError) as exc:
        raise click.ClickException(str(exc)) from exc
    if out == "-":
        click.echo(chaos_markdown(report))
    else:
        click.echo(write_chaos(report, Path(out)))
        click.echo(f"(written to {out})")
