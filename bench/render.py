"""The overhead report as markdown: printed as it is, and written to ``docs/performance.md``."""

from __future__ import annotations

from bench.overhead import Level, OverheadReport
from bench.report import mib, ms
from bench.stats import Spread

TITLE = "## Gateway overhead"
BOUND_NAMES = {
    "relay": "bare TCP relay",
    "asgi": "bare ASGI floor",
    "litestar": "Litestar floor",
}
BOUND_TEXT = (
    "The bounds run in the same rounds and do less per request than any gateway could: the "
    "*bare TCP relay* (`bench/relay.py`) copies bytes between each client connection and its "
    "own upstream connection and parses nothing, the most any Python gateway could serve here; "
    "the *bare ASGI floor* and the *Litestar floor* (`bench/floor.py`) run on uvicorn exactly "
    "as the gateway does (same loop, same HTTP parser), read and decode the request and answer "
    "with the upstream's own bytes without asking it, the most any gateway served by uvicorn, "
    "and any built on Litestar, could serve."
)


def _spread(spread: Spread) -> str:
    return " / ".join(ms(v) for v in (spread.p50, spread.p95, spread.p99))


def _latency_row(level: Level) -> str:
    ttft = level.added_ttft
    ttft_text = f"{ms(ttft.p50)} / {ms(ttft.p99)}" if level.stream else "-"
    cells = [
        level.mode,
        str(level.concurrency),
        _spread(level.direct.latency),
        _spread(level.gateway.latency),
        f"**{_spread(level.added)}**",
        ttft_text,
    ]
    return "| " + " | ".join(cells) + " |"


def _throughput_row(level: Level) -> str:
    cells = [
        level.mode,
        str(level.concurrency),
        f"{level.direct.rps:,.0f}",
        f"{level.gateway.rps:,.0f}",
        f"**{level.ratio:.0%}**",
        *(f"{level.bounds[n].rps:,.0f} ({level.bound_ratio(n):.0%})" for n in level.bounds),
        ms(level.gateway.cpu_per_1000, 3),
        f"{level.direct.errors} / {level.gateway.errors}",
    ]
    return "| " + " | ".join(cells) + " |"


def _bound_names(report: OverheadReport) -> list[str]:
    return list(report.levels[0].bounds) if report.levels else []


def _throughput_head(report: OverheadReport) -> str:
    bounds = "".join(f" {BOUND_NAMES[n]} req/s (of direct) |" for n in _bound_names(report))
    return (
        "| mode | concurrency | direct req/s | gateway req/s | gateway / direct |"
        + bounds
        + " gateway CPU s per 1k requests | errors direct / gateway |"
    )


def _settings(report: OverheadReport) -> str:
    s = report.settings
    levels = ", ".join(str(c) for c in s.concurrency)
    return (
        f"Settings: {s.requests:,} requests per load level and target, in {s.rounds} interleaved "
        f"rounds after {s.warmup} warm-up requests; concurrency {levels}; answers of "
        f"{report.levels[0].tokens if report.levels else 0} tokens (the gateway always streams "
        f"from the node, so a `whole` request is assembled from chunks); relay cost from "
        f"{s.requests // 2:,} streams of {report.relay.short.tokens if report.relay else 0} and "
        f"{s.chunks} tokens at concurrency 1."
    )


def _relay(report: OverheadReport) -> list[str]:
    relay = report.relay
    if relay is None:
        return []
    return [
        f"- Per-chunk relay cost: **{ms(relay.per_chunk_us, 1)} us per chunk** (added stream "
        f"time p50: {ms(relay.short.added.p50, 3)} ms at {relay.short.tokens} tokens, "
        f"{ms(relay.long.added.p50, 3)} ms at {relay.long.tokens} tokens); median gap between "
        f"chunks of the {relay.long.tokens}-token stream: direct "
        f"{ms(relay.long.direct.gap_ms * 1000, 1)} us, through the gateway "
        f"{ms(relay.long.gateway.gap_ms * 1000, 1)} us.",
    ]


def _targets(report: OverheadReport) -> list[str]:
    ones = [lv for lv in report.levels if lv.concurrency == 1]
    busiest = max((lv.concurrency for lv in report.levels), default=0)
    top = [lv for lv in report.levels if lv.concurrency == busiest]
    lines = []
    for level in ones:
        p50, p99 = level.added.p50, level.added.p99
        verdict = "met" if p50 <= 1 and p99 <= 3 else "not met"
        lines.append(
            f"- Target added p50 <= 1 ms and p99 <= 3 ms at concurrency 1 ({level.mode}): "
            f"{ms(p50)} / {ms(p99)} ms, {verdict}."
        )
    for level in top:
        verdict = "met" if level.ratio >= 0.5 else "not met"
        bounds = "; ".join(
            f"the {BOUND_NAMES[n]} serves {level.bound_ratio(n):.0%}" for n in level.bounds
        )
        lines.append(
            f"- Target gateway throughput >= 50% of direct at concurrency {busiest} "
            f"({level.mode}): {level.ratio:.0%}, {verdict}; {bounds}."
        )
    return lines


def overhead_markdown(report: OverheadReport) -> str:
    """The whole section, starting with its ``## `` title."""
    load = ", ".join(f"{v:.2f}" for v in report.load_after)
    lines = [
        TITLE,
        "",
        f"Measured {report.started:%Y-%m-%d %H:%M %Z} with `booagent bench overhead` on "
        f"{report.machine.describe()}; at the end {load}.",
        "",
        "The upstream is `bench/upstream.py` (a raw-asyncio OpenAI-compatible server with fixed "
        "answers); the client speaks HTTP/1.1 over raw asyncio keep-alive connections. "
        + BOUND_TEXT
        + " Client, gateway, bounds and upstream share the machine's cores. "
        + _settings(report),
        "",
        "Latency in ms, p50 / p95 / p99 (added = gateway minus direct, per percentile):",
        "",
        "| mode | concurrency | direct | through gateway | added | TTFT added p50 / p99 |",
        "|---|---|---|---|---|---|",
        *(_latency_row(level) for level in report.levels),
        "",
        "Throughput and cost:",
        "",
        _throughput_head(report),
        "|---|---|---|---|---|" + "---|" * len(_bound_names(report)) + "---|---|",
        *(_throughput_row(level) for level in report.levels),
        "",
        *_relay(report),
        f"- Gateway peak RSS: **{mib(report.gateway_peak_rss_kib)}** (at the end "
        f"{mib(report.gateway_rss_kib)}); upstream peak RSS {mib(report.upstream_peak_rss_kib)}.",
        *_targets(report),
        "",
    ]
    return "\n".join(lines)
