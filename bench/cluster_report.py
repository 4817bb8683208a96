"""The cluster benchmark's report: markdown (printed and written) and a PNG chart."""

from __future__ import annotations

from pathlib import Path

from bench.cluster import ClusterReport, LevelRun
from bench.report import ms
from bench.stats import Spread

REPORT = "report.md"
CHART = "cluster.png"


def _s(spread: Spread, digits: int = 2) -> str:
    """p50 / p95 of a spread held in milliseconds, shown in seconds."""
    if spread.p50 != spread.p50:
        return "n/a"
    return f"{spread.p50 / 1000:.{digits}f} / {spread.p95 / 1000:.{digits}f}"


def _alone_rows(report: ClusterReport) -> list[str]:
    rows = []
    for a in report.alone:
        cells = [
            a.node,
            a.member,
            str(len(a.ok)),
            ms(a.ttft.p50, 0),
            f"{a.decode:.1f}",
            f"{a.throughput:.1f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _level_row(report: ClusterReport, level: LevelRun) -> str:
    share = level.tokens_per_second / report.sum_alone if report.sum_alone else 0.0
    cells = [
        str(level.concurrency),
        str(len(level.outcomes)),
        str(level.errors),
        f"{level.rps:.2f}",
        _s(level.latency),
        _s(level.ttft),
        _s(level.queue_wait),
        f"{level.tokens_per_second:.1f}",
        f"{share:.0%}",
    ]
    return "| " + " | ".join(cells) + " |"


def _node_rows(report: ClusterReport, level: LevelRun) -> list[str]:
    counts = level.requests_by_node()
    total = sum(counts.values()) or 1
    rows = []
    for node, member in report.nodes:
        cells = [
            str(level.concurrency),
            node,
            member,
            str(counts.get(node, 0)),
            f"{counts.get(node, 0) / total:.0%}",
            f"{level.busy(node):.0%}",
            f"{level.queued(node):.2f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _kinds(level: LevelRun) -> str:
    by_kind: dict[str, list[str]] = {}
    for o in level.ok:
        by_kind.setdefault(o.kind, []).append(o.node)
    parts = []
    for kind, nodes in sorted(by_kind.items()):
        spread = ", ".join(f"{n} {nodes.count(n)}" for n in sorted(set(nodes)))
        parts.append(f"{kind}: {spread}")
    return f"- concurrency {level.concurrency}: " + "; ".join(parts)


def _command(report: ClusterReport) -> str:
    s = report.settings
    levels = ",".join(str(c) for c in s.concurrency)
    return f"`booagent bench cluster --concurrency {levels} --duration-per-level {s.duration:g}`"


def _errors(report: ClusterReport) -> list[str]:
    errors = [o.error for lv in report.levels for o in lv.outcomes if not o.ok]
    errors += [f"{a.node} alone: {o.error}" for a in report.alone for o in a.outcomes if not o.ok]
    if not errors:
        return ["- No request failed."]
    shown = sorted(set(errors))[:5]
    noun = "request" if len(errors) == 1 else "requests"
    return [f"- {len(errors)} {noun} failed; distinct errors: " + "; ".join(shown)]


def _quiet(report: ClusterReport) -> list[str]:
    """A warning when other work was using the CPU: the figures then understate the cluster."""
    load = report.machine.load[0]
    if load <= 1.0:
        return []
    return [
        f"**Not a quiet machine:** the load average was {load:.2f} when the run started (other "
        "processes were using the cores), so these figures understate what the cluster does "
        "on a quiet machine; rerun when `uptime` shows a load under 1.",
        "",
    ]


def cluster_markdown(report: ClusterReport) -> str:
    """The whole report."""
    s = report.settings
    load = ", ".join(f"{v:.2f}" for v in report.load_after)
    return "\n".join(
        [
            "# Cluster benchmark",
            "",
            f"Measured {report.started:%Y-%m-%d %H:%M %Z} with {_command(report)} on "
            f"{report.machine.describe()}; at the end {load}.",
            "",
            *_quiet(report),
            f"Workload: a fixed cycle of chat and code questions (streamed, `max_tokens` "
            f"{s.max_tokens}) and Open WebUI `### Task:` chores (title, tags, follow-ups, "
            f"search query; not streamed, `max_tokens` {s.chore_tokens}), one third each, "
            f"temperature 0, fixed seed, sent as model `{s.model}` with the official `openai` "
            "SDK (async, no client retries) by closed-loop workers, one per unit of "
            f"concurrency, for {s.duration:g} s per level (requests running at the end are "
            "waited for and counted). Every node is a `llama_cpp.server` process (one request "
            "at a time) started by the benchmark; the gateway runs as `booagent serve`.",
            "",
            "## Each node alone",
            "",
            "One request at a time, directly to the node (chat, code and chore prompt; the "
            "other nodes idle). Serving tokens/s = completion tokens / wall time, prompt "
            "processing included.",
            "",
            "| node | member | answers | TTFT p50 ms | decode tokens/s | serving tokens/s |",
            "|---|---|---|---|---|---|",
            *_alone_rows(report),
            "",
            f"Sum of the nodes alone: **{report.sum_alone:.1f} tokens/s**.",
            "",
            "## Through the gateway",
            "",
            "Seconds, p50 / p95. Queue wait is what the gateway logged per request "
            "(`queue_wait_s`: time waiting for a free slot on the chosen node). TTFT is for "
            "streamed requests.",
            "",
            "| concurrency | requests | errors | req/s | latency | TTFT | queue wait "
            "| tokens/s | of sum alone |",
            "|---|---|---|---|---|---|---|---|---|",
            *(_level_row(report, lv) for lv in report.levels),
            "",
            *_errors(report),
            "",
            "## How load spreads",
            "",
            "Busy = share of `GET /v1/cluster` samples (every "
            f"{s.sample_interval:g} s) with a request in flight on the node; queued = mean "
            "requests waiting for it in the gateway.",
            "",
            "| concurrency | node | member | requests | share | busy | mean queued |",
            "|---|---|---|---|---|---|---|",
            *(row for lv in report.levels for row in _node_rows(report, lv)),
            "",
            "Requests by kind and node:",
            "",
            *(_kinds(lv) for lv in report.levels),
            "",
            f"![throughput, latency, utilisation and spread by concurrency]({CHART})",
            "",
            f"Processes left behind after the run: {len(report.leftovers)}.",
            "",
        ]
    )


def write_chart(report: ClusterReport, path: Path) -> None:
    """Four panels by concurrency: throughput, latency, utilisation, requests per node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv.concurrency for lv in report.levels]
    names = [n for n, _ in report.nodes]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    tput, lat, busy, spread = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    tput.plot(levels, [lv.tokens_per_second for lv in report.levels], "o-", label="cluster")
    tput.axhline(report.sum_alone, linestyle="--", color="grey", label="sum of nodes alone")
    tput.set(title="tokens/s", xlabel="concurrency", xticks=levels)
    tput.legend()
    for label, pick in (("latency p50", "p50"), ("latency p95", "p95")):
        lat.plot(
            levels, [getattr(lv.latency, pick) / 1000 for lv in report.levels], "o-", label=label
        )
    lat.plot(levels, [lv.ttft.p50 / 1000 for lv in report.levels], "s--", label="TTFT p50")
    lat.plot(levels, [lv.queue_wait.p50 / 1000 for lv in report.levels], "^:", label="queue p50")
    lat.set(title="seconds", xlabel="concurrency", xticks=levels)
    lat.legend()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(levels))]
        busy.bar(xs, [lv.busy(name) for lv in report.levels], width, label=name)
        spread.bar(
            xs, [lv.requests_by_node().get(name, 0) for lv in report.levels], width, label=name
        )
    for ax, title in ((busy, "busy fraction per node"), (spread, "requests per node")):
        ax.set_xticks(
            [j + width * (len(names) - 1) / 2 for j in range(len(levels))], [str(c) for c in levels]
        )
        ax.set(title=title, xlabel="concurrency")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: ClusterReport, out: Path) -> str:
    """Write ``report.md`` and the chart into ``out``; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_chart(report, out / CHART)
    text = cluster_markdown(report)
    (out / REPORT).write_text(text)
    return text
