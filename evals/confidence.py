"""Fit the cascade's ``confidence`` threshold on the dev split: ``python -m evals.confidence``.

The cascade judges a cheap member's answer by its mean token probability only where nothing
else can judge it (no code, JSON, tools or checkable instruction) and only on nodes that give
log-probs at no extra cost (native llama-server). This asks the cheap member, through the
gateway, every such dev item with ``logprobs: true``, then replays "accept the cheap answer
when its mean token probability reaches t, else take the strong member's" for a range of t,
with the strong member's answers from the harness's cache (``booagent eval`` asks them).

    python -m evals.confidence http://127.0.0.1:8100 --cheap qwen2.5-coder-0.5b \\
        --strong qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import openai

from ensemble.checks import Checker
from ensemble.signals import confidence
from evals.client import Sampling, api_base
from evals.fit import body_of, request_kind
from evals.items import Item, load_suite, select
from evals.runner import DEFAULT_SAMPLING, Record, cached_records
from evals.score import score

THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)


@dataclass(frozen=True, slots=True)
class Sure:
    """The cheap member's answer to one item: right or not, how sure, how long it took."""

    item: str
    correct: bool
    confidence: float | None
    seconds: float


def unjudged(items: Sequence[Item]) -> list[Item]:
    """The items no checker can judge: where the cascade would look at log-probs."""
    return [i for i in items if not Checker.of(body_of(i), request_kind(i)).judges_form]


async def ask_sure(url: str, member: str, items: Sequence[Item], sampling: Sampling) -> list[Sure]:
    """Ask ``member`` each item with ``logprobs: true``, one at a time."""
    found = []
    async with openai.AsyncOpenAI(base_url=api_base(url), api_key="unused") as client:
        for item in items:
            started = time.perf_counter()
            done = await client.chat.completions.create(
                model=member,
                messages=[{"role": "user", "content": item.prompt}],
                max_tokens=sampling.cap,
                temperature=sampling.temperature,
                seed=sampling.seed,
                logprobs=True,
            )
            seconds = time.perf_counter() - started
            choice = done.choices[0]
            entries = (
                [e.model_dump() for e in (choice.logprobs.content or [])] if choice.logprobs else []
            )
            text = choice.message.content or ""
            found.append(Sure(item.id, score(item, text).correct, confidence(entries), seconds))
    return found


@dataclass(frozen=True, slots=True)
class Replay:
    threshold: float
    accuracy: float
    accepted: float
    seconds: float


def replay(sure: Sequence[Sure], strong: dict[str, Record], threshold: float) -> Replay:
    """Accuracy, share of cheap answers accepted, and mean seconds at ``threshold``."""
    correct, accepted, seconds = 0, 0, 0.0
    for answer in sure:
        seconds += answer.seconds
        if answer.confidence is not None and answer.confidence >= threshold:
            correct, accepted = correct + answer.correct, accepted + 1
        else:
            record = strong[answer.item]
            correct, seconds = correct + record.correct, seconds + record.latency
    n = len(sure)
    return Replay(threshold, correct / n, accepted / n, seconds / n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("--cheap", required=True)
    parser.add_argument("--strong", required=True)
    parser.add_argument("--split", default="dev")
    args = parser.parse_args(argv)
    items = unjudged(select(load_suite(), split=args.split))
    strong = {r.item_id: r for r in cached_records([args.strong], items)}
    missing = [i.id for i in items if i.id not in strong]
    if missing:
        raise SystemExit(f"no cached answer of {args.strong} for {missing[:5]}: run booagent eval")
    sure = asyncio.run(ask_sure(args.url, args.cheap, items, DEFAULT_SAMPLING))
    alone = sum(s.correct for s in sure) / len(sure)
    strong_alone = sum(strong[s.item].correct for s in sure) / len(sure)
    print(
        f"{len(sure)} items; {args.cheap} alone {alone:.0%}, {args.strong} alone {strong_alone:.0%}"
    )
    print(f"{'threshold':>9} {'accuracy':>8} {'accepted':>8} {'mean s':>7}")
    for t in THRESHOLDS:
        r = replay(sure, strong, t)
        print(f"{r.threshold:9.2f} {r.accuracy:8.0%} {r.accepted:8.0%} {r.seconds:7.2f}")


if __name__ == "__main__":
    main()
