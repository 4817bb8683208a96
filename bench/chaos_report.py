"""The chaos benchmark's report, as markdown: printed, and written to ``docs/chaos.md``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.chaos import ChaosReport
from bench.exchange import COMPLETE, FAILED, INTERRUPTED, TRUNCATED, Exchange


def _command(report: ChaosReport) -> str:
    s = report.settings
    low, high = s.kill_every
    parts = [
        "booagent bench chaos",
        f"--duration {s.duration:g}",
        f"--kill-every {low:g}-{high:g}",
        f"--concurrency {s.concurrency}",
        f"--seed {s.seed}",
    ]
    if s.spare:
        parts.append("--spare")
    return "`" + " ".join(parts) + "`"


def _outcome_rows(report: ChaosReport) -> list[str]:
    failed = report.of(FAILED)
    interrupted = report.of(INTERRUPTED)
    explained = [e for e in interrupted if report.interrupted_explained(e)]
    silent = [e for e in interrupted if e.silent_cut]
    continued = report.continued()
    rows = [
        ("requests sent", len(report.exchanges)),
        ("**served complete**", len(report.of(COMPLETE))),
        ("- of which continued on another node of the member after their node failed "
         "mid-answer", len(continued)),
        ("  - of which every node they were taken from was killed during the stream "
         "(explained)", len([e for e in continued if report.continued_explained(e)])),
        ("failed (non-200 status, or no response)", len(failed)),
        ("- of which an allowed node was up for the whole request (strict)",
         len(report.failed_while_serving(0.0))),
        (f"- **of which an allowed node had been up {report.grace:g} s before it and stayed "
         "up (target 0)**", len(report.failed_while_serving(report.grace))),
        ("interrupted streams (error frame, or no `[DONE]`): shown to the client as errors",
         len(interrupted)),
        ("- of which the serving node was killed during the stream (explained)", len(explained)),
        (f"- **of which another node of the member had been up {report.grace:g} s before it "
         "and stayed up (target 0)**", len(report.interrupted_while_member_up(report.grace))),
        ("- of which ended without an error frame (a silent cut)", len(silent)),
        ("**truncated answers presented as complete (target 0)**", len(report.of(TRUNCATED))),
        ("**unexplained (the three targets above, plus unexplained interruptions)**",
         len(report.unexplained())),
    ]  # fmt: skip
    return [f"| {label} | {count} |" for label, count in rows]


def _kind_rows(report: ChaosReport) -> list[str]:
    kinds = sorted({e.kind for e in report.exchanges})
    rows = []
    for kind in kinds:
        counts = Counter(e.outcome for e in report.exchanges if e.kind == kind)
        handed = sum(1 for e in report.continued() if e.kind == kind)
        cells = [kind, *(str(counts.get(o, 0)) for o in (COMPLETE, FAILED, INTERRUPTED, TRUNCATED))]
        cells.insert(2, str(handed))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _describe(ex: Exchange) -> str:
    what = ex.body_error or ex.transport_error or ex.error_frame or "no [DONE]"
    return f"{ex.outcome} {ex.status or '-'} {ex.kind} node={ex.node or '-'}: {what[:160]}"


def _details(report: ChaosReport) -> list[str]:
    """Blocks about the requests that did not complete, each followed by a blank line."""
    bad = [e for e in report.exchanges if e.outcome != COMPLETE]
    statuses = Counter(str(e.status or e.transport_error.split(":")[0]) for e in report.of(FAILED))
    lines: list[str] = []
    if statuses:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        lines += [f"Failed requests by status: {shown}", ""]
    unexplained = report.unexplained()
    if unexplained:
        lines += ["Unexplained requests (first 10):", ""]
        lines += [*(f"- `{_describe(e)}`" for e in unexplained[:10]), ""]
    elif bad:
        lines += ["Examples of explained failures (first 5):", ""]
        lines += [*(f"- `{_describe(e)}`" for e in bad[:5]), ""]
    return lines


def _kills(report: ChaosReport) -> str:
    by_node = Counter(k.node for k in report.kills)
    spread = ", ".join(f"{n} {by_node.get(n, 0)}" for n, _ in report.nodes)
    return (
        f"{len(report.kills)} kills (SIGKILL to the node's process group: {spread}); "
        f"{report.restarts} restarts completed by the supervisor during the run."
    )


def _memory(report: ChaosReport) -> list[str]:
    first, last, span = report.rss_windows()
    growth = (last - first) / first if first else 0.0
    peak = max((kib for _, kib in report.rss), default=0)
    verdict = "met" if growth < 0.10 else "not met"
    return [
        f"- Gateway RSS (pid {report.gateway_pid}, `VmRSS` every second): mean of the first "
        f"{span:.0f} s **{first / 1024:.1f} MiB**, of the last {span:.0f} s **{last / 1024:.1f} "
        f"MiB**: growth **{growth:+.1%}** (target under 10%: {verdict}); peak "
        f"{peak / 1024:.1f} MiB.",
    ]


def chaos_markdown(report: ChaosReport) -> str:
    s = report.settings
    load = ", ".join(f"{v:.2f}" for v in report.load_after)
    elapsed = report.window[1] - report.window[0]
    nodes = ", ".join(f"`{n}` ({m})" for n, m in report.nodes)
    return "\n".join(
        [
            "# Chaos benchmark",
            "",
            f"Measured {report.started:%Y-%m-%d %H:%M %Z} with {_command(report)} "
            f"(config `{s.config.name}`) on {report.machine.describe()}; at the end {load}.",
            "",
            f"Nodes: {nodes}. Requests go to `{s.model}` (allowed nodes: "
            f"{', '.join(report.allowed)}). Mixed workload (chat and code streamed with "
            f"`max_tokens` {s.max_tokens}, Open WebUI chores not streamed), "
            f"{s.concurrency} closed-loop clients for {elapsed:.0f} s, read with httpx "
            "byte by byte. " + _kills(report),
            "",
            "| outcome | requests |",
            "|---|---|",
            *_outcome_rows(report),
            "",
            "| kind | complete | of which continued | failed | interrupted | truncated as "
            "complete |",
            "|---|---|---|---|---|---|",
            *_kind_rows(report),
            "",
            *_details(report),
            *_memory(report),
            f"- Processes left behind after the run: {len(report.leftovers)}.",
            "",
            "Definitions. *Complete*: HTTP 200 and, for a stream, `data: [DONE]` with no error "
            "frame and a `finish_reason`; for a whole answer, a `finish_reason`. *Failed*: "
            "another status, or no response. *Interrupted*: a 200 stream that ended with an "
            "error frame or without `[DONE]`; never counted as complete. *Truncated presented "
            "as complete*: `[DONE]` (or a whole 200 answer) without any `finish_reason`. "
            "*Continued*: a complete answer whose node failed mid-answer and which another node "
            "of the same member went on with (its `booagent.continued` says from and to which "
            "node); an interruption while such a node was up is a miss (target 0). A node "
            "is *up* from the moment the supervisor saw it answer HTTP until it was killed; "
            "the grace period is the gateway's health interval + probe timeout + breaker open "
            "time, the longest it may by design take to use a restarted node again. An "
            "interruption is *explained* when the node named in `x-booagent-node` was killed "
            "while the stream ran (the gateway commits a stream at its first token; after that "
            "a node's death is hidden only when another node of the member can go on with the "
            "answer, else reported). A failed client pauses 1 s before its next request.",
            "",
        ]
    )


def write_chaos(report: ChaosReport, path: Path) -> str:
    text = chaos_markdown(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
