"""``booagent bench``: what the gateway costs, and how the real cluster performs and survives.

A plugin of the ``booagent`` command (entry point group ``booagent.commands``): the gateway's
CLI loads it without importing this package itself, so imports only run from ``bench`` down.
"""

from __future__ import annotations

from pathlib import Path

import click

from backends.errors import BooagentError
from bench.chaos import CHAOS_CONFIG
from gateway.settings import DEFAULT_CONFIG


@click.group("bench")
def bench() -> None:
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


@bench.command("overhead")
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


@bench.command("memory")
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


@bench.command("instructions")
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


@bench.command("cluster")
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


@bench.command("chaos")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=CHAOS_CONFIG,
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


@bench.command("soak")
@click.option("--hours", type=click.FloatRange(0.01), default=2.0, show_default=True)
@click.option("--sample-every", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds between samples of the gateway process.")  # fmt: skip
@click.option("--warmup", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Seconds left out of the slopes (start-up, caches filling).")  # fmt: skip
@click.option("--kill-every", default="30-90", show_default=True,
              help="Seconds between node kills, LOW-HIGH.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True)
@click.option("--out", default="docs/soak.md", show_default=True, help="'-' writes none.")
def bench_soak(
    hours: float, sample_every: float, warmup: float, kill_every: str, concurrency: int,
    out: str,
) -> None:  # fmt: skip
    """Hours of the chaos load, watching the gateway's memory, file descriptors, tasks and
    latency for growth; reports slopes and their 24-hour extrapolation."""
    from bench.chaos import ChaosSettings, kill_range
    from bench.live import BenchError
    from bench.soak import SoakSettings, run_soak
    from bench.soak_report import soak_markdown, write_soak

    try:
        every = kill_range(kill_every)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kill-every") from exc
    chaos = ChaosSettings(
        duration=hours * 3600, kill_every=every, concurrency=concurrency, spare=True,
        progress_every=600.0,
    )  # fmt: skip
    settings = SoakSettings(chaos, sample_every, min(warmup, hours * 3600 / 3))
    try:
        report = run_soak(settings, echo=lambda line: click.echo(line, err=True))
    except (BenchError, BooagentError) as exc:
        raise click.ClickException(str(exc)) from exc
    markdown = soak_markdown(report)
    click.echo(markdown)
    if out != "-":
        write_soak(Path(out), markdown)
        click.echo(f"(written to {out})")


@bench.command("hop")
@click.option("--requests", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--chunks", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--out", default="docs/performance-hop.md", show_default=True,
              help="'-' writes none.")  # fmt: skip
def bench_hop(requests: int, chunks: int, out: str) -> None:
    """What a node agent's mutual-TLS hop adds per request and per chunk."""
    from bench.hop import HopSettings, hop_markdown, run_hop

    markdown = hop_markdown(run_hop(HopSettings(requests, chunks)))
    click.echo(markdown)
    if out != "-":
        Path(out).write_text("# Node agent hop\n\n" + markdown)
        click.echo(f"(written to {out})")


@bench.command("machines")
@click.option("--duration", type=click.FloatRange(5), default=60.0, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option("--out", default="docs/performance-machines.md", show_default=True,
              help="'-' writes none.")  # fmt: skip
def bench_machines(duration: float, concurrency: int, max_tokens: int, out: str) -> None:
    """Throughput of two namespace machines together against the sum of each alone (root)."""
    from bench.machines import MachinesSettings, machines_markdown, run_machines

    settings = MachinesSettings(duration, concurrency, max_tokens)
    markdown = machines_markdown(run_machines(settings, lambda line: click.echo(line, err=True)))
    click.echo(markdown)
    if out != "-":
        Path(out).write_text("# Several machines\n\n" + markdown)
        click.echo(f"(written to {out})")
