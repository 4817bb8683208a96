"""``booagent eval``: score models on the task suite through a running gateway.

A plugin of the ``booagent`` command (entry point group ``booagent.commands``): the gateway's
CLI loads it without importing this package itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command("eval")
@click.option("--against", required=True, help="Gateway URL, e.g. http://127.0.0.1:8100.")
@click.option("--strategies", multiple=True, help="Strategy models (e.g. route,cascade; all).")
@click.option("--members", multiple=True, help="Member models by name (comma-separated; all).")
@click.option("--split", default="test", show_default=True, help="dev, test or all.")
@click.option("--kinds", multiple=True, help="code, math, fact, format, tool (default: all).")
@click.option("--limit", type=int, default=None, help="At most N items per kind.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="0: the requests set no max_tokens (answers end when the model stops).",
)
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
