"""Summaries of timed samples: percentiles, rates, and one side of a comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import Phase, Sample


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """p50, p95 and p99, in milliseconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Spread:
        return cls(*(percentile(seconds, q) * 1000 for q in (50, 95, 99)))

    def minus(self, other: Spread) -> Spread:
        return Spread(self.p50 - other.p50, self.p95 - other.p95, self.p99 - other.p99)


@dataclass(frozen=True, slots=True)
class Side:
    """One target at one load level, over all rounds."""

    latency: Spread
    ttft: Spread
    rps: float
    requests: int
    errors: int
    cpu_seconds: float
    gap_ms: float

    @property
    def cpu_per_1000(self) -> float:
        """CPU seconds the measured process spent per 1,000 requests."""
        return self.cpu_seconds / max(1, self.requests) * 1000


def summarise(phases: Sequence[Phase], tokens: int, cpu_seconds: float) -> Side:
    """Fold the rounds of one target into a :class:`Side`; wrong token counts are errors."""
    good: list[Sample] = []
    errors = 0
    for phase in phases:
        errors += phase.errors
        for sample in phase.samples:
            if sample.status == 200 and sample.tokens == tokens:
                good.append(sample)
            else:
                errors += 1
    wall = sum(p.wall for p in phases)
    requests = sum(len(p.samples) + p.errors for p in phases)
    gaps = [s.first_to_last / (s.tokens - 1) for s in good if s.tokens > 1 and s.first_to_last]
    return Side(
        latency=Spread.of([s.total for s in good]),
        ttft=Spread.of([s.ttft for s in good]),
        rps=requests / wall if wall else 0.0,
        requests=requests,
        errors=errors,
        cpu_seconds=cpu_seconds,
        gap_ms=percentile(gaps, 50) * 1000 if gaps else math.nan,
    )
