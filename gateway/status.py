"""``booagent status``: the dashboard at a glance in the terminal, from ``GET /v1/cluster``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

_STATE_STYLE = {"ready": "green", "loading": "yellow", "down": "red", "unknown": "dim"}


def fetch(url: str, key: str | None, verify: bool | str = True) -> dict[str, Any]:
    """The cluster's status; a :class:`click.ClickException` that says why when it fails."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/v1/cluster", headers=headers, timeout=5, verify=verify)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {url}: {exc}") from exc
    if response.status_code == 401:
        raise click.ClickException("the gateway wants an API key: --key or BOOAGENT_API_KEY")
    if response.status_code != 200:
        raise click.ClickException(f"{url}/v1/cluster answered {response.status_code}")
    status: dict[str, Any] = response.json()
    return status


def render(status: dict[str, Any], now: float | None = None) -> Group:
    return Group(_summary(status), _nodes(status["nodes"]), _requests(status["requests"], now))


def _summary(status: dict[str, Any]) -> str:
    nodes, t = status["nodes"], status["throughput"]
    serving = sum(1 for n in nodes if n["state"] == "ready" and n["breaker"] != "open")
    return (
        f"[bold]{status['virtual_model']}[/]: {serving}/{len(nodes)} nodes serving, "
        f"{sum(n['in_flight'] for n in nodes)} in flight, {sum(n['queued'] for n in nodes)} "
        f"queued; last minute {t['requests_per_second'] * 60:.0f} requests, "
        f"{t['tokens_per_second']:.1f} tokens/s, {t['errors_per_second'] * 60:.0f} errors"
    )


def _nodes(nodes: list[dict[str, Any]]) -> Table:
    table = Table("node", "member", "state", "breaker", "load", "queued", "tok/s", "served",
                  "failed", "last error", title="nodes", title_justify="left")  # fmt: skip
    for n in nodes:
        style = _STATE_STYLE.get(n["state"], "")
        breaker = "[red]open[/]" if n["breaker"] == "open" else n["breaker"]
        speed = "-" if n["tokens_per_second"] is None else f"{n['tokens_per_second']:.1f}"
        table.add_row(
            n["name"], n["member"], f"[{style}]{n['state']}[/]", breaker,
            f"{n['in_flight']}/{n['capacity']}", str(n["queued"]), speed, str(n["served"]),
            str(n["failed"]), n["last_error"] or "",
        )  # fmt: skip
    return table


def _requests(requests: list[dict[str, Any]], now: float | None) -> Table:
    now = time.time() if now is None else now
    table = Table("ago", "key", "kind", "strategy", "asked", "answered by", "why", "status",
                  "total", "tokens", title="recent requests", title_justify="left")  # fmt: skip
    for r in requests[:10]:
        status = str(r["status"]) if r["status"] < 400 else f"[red]{r['status']}[/]"
        table.add_row(
            f"{now - r['at']:.0f} s", r["key"], r["kind"], r["strategy"],
            ", ".join(r["members"]) or "-", r["node"] or "-", r["why"] or "", status,
            f"{r['total_s']:.2f} s", f"{r['tokens_in']}→{r['tokens_out']}",
        )  # fmt: skip
    return table


def show(url: str, key: str | None, verify: bool | str, watch: float | None) -> None:
    """Print the status once, or redraw it every ``watch`` seconds until Ctrl-C."""
    console = Console()
    if watch is None:
        console.print(render(fetch(url, key, verify)))
        return
    with Live(render(fetch(url, key, verify)), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(watch)
            live.update(render(fetch(url, key, verify)), refresh=True)


def verify_option(cacert: Path | None) -> bool | str:
    return True if cacert is None else str(cacert)
