"""``GET /metrics``: the gateway in the Prometheus text format, by ``prometheus_client``.

Every app has its own registry (no process-wide default registry, so two apps in one process
never mix their figures). Request figures are observed when a request ends
(:meth:`Metrics.observe`); node figures are read from the pool when scraped. Labels come from
closed sets only: model and strategy names, kinds, statuses, key names and node names from the
config, and failure causes from the error tree (``NodeError.reason``); never request ids or
free text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.record import CLIENT_CLOSED, Ended

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300)
_WAIT = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    """The gateway's metrics; ``nodes`` reads the pool's node snapshots at scrape time."""

    def __init__(self, nodes: Callable[[], Sequence[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "booagent_requests", "Chat requests by how they ended.",
            ["model", "strategy", "kind", "status", "key"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "booagent_request_duration_seconds", "Time from request to its last byte.",
            ["strategy", "kind", "stream"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "booagent_time_to_first_token_seconds", "Time from request to its first token.",
            ["strategy", "kind", "stream"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "booagent_queue_wait_seconds", "Time a request's member calls waited for a slot.",
            ["kind"], buckets=_WAIT, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "booagent_tokens", "Tokens of answered requests (every member call they caused).",
            ["direction", "key"], registry=r,
        )  # fmt: skip
        self.failures = Counter(
            "booagent_node_failures", "Failed node attempts by node and cause.",
            ["node", "cause"], registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "booagent_retries", "Node attempts beyond each member call's first.", registry=r
        )
        self.escalations = Counter(
            "booagent_escalations", "Cascade steps up to a stronger member.", registry=r
        )
        self.votes = Counter(
            "booagent_ensemble_decisions", "Ensemble answers by how the winner was chosen.",
            ["method"], registry=r,
        )  # fmt: skip
        self.interrupted = Counter(
            "booagent_streams_interrupted", "Streams that ended with an error after the answer "
            "began.", registry=r,
        )  # fmt: skip
        self.continued = Counter(
            "booagent_streams_continued", "Answers handed on to another node of their member "
            "after their node failed mid-answer.", registry=r,
        )  # fmt: skip
        r.register(_NodeCollector(nodes))
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        r.register(_LoopCollector())

    def observe(self, ended: Ended) -> None:
        outcome, stream = ended.outcome, str(ended.stream).lower()
        strategy, kind = ended.strategy, ended.kind
        key = ended.client.name
        self.requests.labels(ended.model, strategy, kind, str(outcome.status), key).inc()
        if outcome.status == CLIENT_CLOSED:
            return
        self.duration.labels(strategy, kind, stream).observe(ended.total)
        if outcome.first_token is not None:
            self.first_token.labels(strategy, kind, stream).observe(outcome.first_token)
        if outcome.calls:
            self.queue_wait.labels(kind).observe(ended.queue_wait)
        prompt, completion = ended.tokens
        self.tokens.labels("prompt", key).inc(prompt)
        self.tokens.labels("completion", key).inc(completion)
        self._decision(ended)

    def _decision(self, ended: Ended) -> None:
        for failure in ended.failures:
            node, _, cause = failure.partition(": ")
            self.failures.labels(node, cause).inc()
        self.retries.inc(sum(max(0, len(c.attempts) - 1) for c in ended.outcome.calls))
        answer = ended.outcome.answer
        if answer is None:
            return
        if ended.outcome.error is not None:
            self.interrupted.inc()
        if ended.continued:
            self.continued.inc()
        why = answer.why
        if isinstance(why.get("escalations"), int):
            self.escalations.inc(why["escalations"])
        if isinstance(why.get("method"), str):
            self.votes.labels(why["method"]).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_NODE_GAUGES = (
    ("in_flight", "booagent_node_in_flight", "Requests the node is answering."),
    ("queued", "booagent_node_queued", "Requests waiting for a slot on the node."),
    ("capacity", "booagent_node_capacity", "Requests the node answers side by side."),
    ("tokens_per_second", "booagent_node_tokens_per_second", "Recent decode speed."),
    ("ttft_seconds", "booagent_node_time_to_first_token_seconds", "Recent first-token time."),
)


class _NodeCollector(Collector):
    """Each node's state, breaker, load and speed, read from the pool when scraped."""

    def __init__(self, nodes: Callable[[], Sequence[dict[str, Any]]]) -> None:
        self._nodes = nodes

    def collect(self) -> Iterator[Metric]:
        nodes = self._nodes()
        up = GaugeMetricFamily(
            "booagent_node_up", "1 when the node is ready and its breaker lets requests in.",
            labels=["node", "member"],
        )  # fmt: skip
        state = GaugeMetricFamily(
            "booagent_node_state", "1 for the node's current readiness and breaker state.",
            labels=["node", "state", "breaker"],
        )  # fmt: skip
        for node in nodes:
            serving = node["state"] == "ready" and node["breaker"] != "open"
            up.add_metric([node["name"], node["member"]], 1.0 if serving else 0.0)
            state.add_metric([node["name"], node["state"], node["breaker"]], 1.0)
        yield up
        yield state
        for field, name, doc in _NODE_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["node"])
            for node in nodes:
                if node[field] is not None:
                    gauge.add_metric([node["name"]], float(node[field]))
            yield gauge
        for field in ("served", "failed"):
            counter = CounterMetricFamily(
                f"booagent_node_{field}", f"Requests the node {field}.", labels=["node"]
            )
            for node in nodes:
                counter.add_metric([node["name"]], float(node[field]))
            yield counter


class _LoopCollector(Collector):
    """Tasks alive on the gateway's event loop (a leak shows as a count that only grows)."""

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("booagent_event_loop_tasks", "Tasks alive on the event loop.")
        try:
            gauge.add_metric([], float(len(asyncio.all_tasks())))
        except RuntimeError:  # scraped outside the loop (a test's registry read)
            return
        yield gauge
