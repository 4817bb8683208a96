"""The fault catalogue, one scenario per test, seen from an `openai` SDK client.

Each test puts a misbehaving node (a real HTTP server on loopback, :class:`FaultServer`) in
front of the gateway, usually as the preferred member with a healthy node behind it. What is
asserted is what the client sees: the answer, the status, the node named in the headers, and
that a cut answer never ends like a complete one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import msgspec
import openai
import pytest

from tests.faults.upstream import FaultServer, Scenario
from tests.harness import eventually, make_settings, running_gateway

HELLO = [{"role": "user", "content": "hello"}]
POLICIES = {
    "timeouts": {"connect": 1, "first_token": 1.0, "stall": 1.0, "total": 20, "queue": 5},
    "retry": {"attempts": 3, "max_retry_after": 2},
    "breaker": {"failures": 2, "open_seconds": 1.0},
    "health": {"interval": 0.2, "timeout": 0.5},
}


RELAXED = {**POLICIES, "timeouts": {**POLICIES["timeouts"], "first_token": 15, "stall": 15}}


def _settings(
    nodes: list[FaultServer], n_ctx: list[int] | None = None, policies: Any = POLICIES
) -> Any:
    """One member per node, preferred in the order given (the first is tried first)."""
    n_ctx = n_ctx or [2048] * len(nodes)
    members = [{"name": f"m-{n.name}", "n_ctx": c} for n, c in zip(nodes, n_ctx, strict=True)]
    order = [m["name"] for m in members]
    return make_settings(
        members=members,
        nodes=[{"name": n.name, "member": f"m-{n.name}", "url": n.url} for n in nodes],
        routes={"general": order, "code": order, "chore": order},
        policies=policies,
    )


@contextmanager
def cluster(
    *nodes: FaultServer, n_ctx: list[int] | None = None, policies: Any = POLICIES
) -> Iterator[openai.OpenAI]:
    """Start the fault servers and a gateway over them; yield an SDK client (no retries)."""
    with ExitStack() as stack:
        for node in nodes:
            stack.enter_context(node.in_thread())
        base = stack.enter_context(running_gateway(_settings(list(nodes), n_ctx, policies)))
        with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=30) as sdk:
            yield sdk


def sdk_for(base: str, max_retries: int = 0) -> openai.OpenAI:
    """An SDK client for the gateway at ``base`` (close it: its pooled sockets stay open)."""
    return openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=max_retries)


def ask(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="booagent-cluster", messages=HELLO, **extra
    )


def stream_text(client: openai.OpenAI) -> tuple[str, str | None, str]:
    """Stream an answer: (text, last finish_reason, serving node)."""
    raw = ask(client, stream=True)
    text, finish = "", None
    for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish, raw.headers["x-booagent-node"]


class TestBeforeTheFirstToken:
    """Failures before any content are retried on another node, invisibly."""

    def test_429_with_retry_after_moves_to_the_next_node(self) -> None:
        bad, good = FaultServer("a", Scenario.RATE_LIMITED_ONCE), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.parse().choices[0].message.content == "hello from b"
        assert (raw.headers["x-booagent-node"], raw.headers["x-booagent-attempts"]) == ("b", "2")

    def test_429_on_the_only_node_is_retried_after_retry_after(self) -> None:
        node = FaultServer("a", Scenario.RATE_LIMITED_ONCE)
        with cluster(node) as client:
            started = time.monotonic()
            raw = ask(client)
            waited = time.monotonic() - started
        assert raw.parse().choices[0].message.content == "hello from a"
        assert raw.headers["x-booagent-attempts"] == "2"
        assert waited >= node.retry_after

    def test_persistent_429_gives_503_with_retry_after_and_no_client_retry(self) -> None:
        """(The breaker is kept out of it: after two failures it would open for as long as the
        node's Retry-After, and whether the third attempt found it open was a race.)"""
        node = FaultServer("a", Scenario.RATE_LIMITED)
        policies = {**POLICIES, "breaker": {"failures": 10, "open_seconds": 1.0}}
        with node.in_thread(), running_gateway(_settings([node], policies=policies)) as base:
            sdk = sdk_for(base, max_retries=2)
            with sdk, pytest.raises(openai.APIStatusError) as caught:
                sdk.chat.completions.create(model="booagent-cluster", messages=HELLO)
        response = caught.value.response
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-should-retry"] == "false"
        assert node.requests == 3, "one request-wide budget of 3, and no SDK retries on top"

    def test_500_once_is_invisible(self) -> None:
        bad, good = FaultServer("a", Scenario.SERVER_ERROR_ONCE), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.parse().choices[0].message.content == "hello from b"

    def test_persistent_503_opens_the_breaker(self) -> None:
        bad, good = FaultServer("a", Scenario.UNAVAILABLE), FaultServer("b")
        with cluster(bad, good) as client:
            attempts = [ask(client).headers["x-booagent-attempts"] for _ in range(4)]
        assert attempts[:2] == ["2", "2"]
        assert attempts[2:] == ["1", "1"], "after 2 failures the node is skipped"
        assert bad.requests == 2

    def test_connection_reset_moves_on(self) -> None:
        bad, good = FaultServer("a", Scenario.RESET), FaultServer("b")
        with cluster(bad, good) as client:
            text, finish, node = stream_text(client)
        assert (text, finish, node) == ("hello from b", "stop", "b")

    def test_no_response_hits_the_first_token_limit(self) -> None:
        bad, good = FaultServer("a", Scenario.NO_RESPONSE), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.headers["x-booagent-node"] == "b"
        assert eventually(lambda: bad.cancelled == 1), "the hung upstream request is closed"

    def test_slow_first_token_moves_on(self) -> None:
        bad, good = FaultServer("a", Scenario.SLOW_FIRST_TOKEN, delay=5), FaultServer("b")
        with cluster(bad, good) as client:
            text, finish, node = stream_text(client)
        assert (text, finish, node) == ("hello from b", "stop", "b")

    def test_context_length_moves_to_a_larger_member(self) -> None:
        small, large = FaultServer("a", Scenario.CONTEXT_LENGTH), FaultServer("b")
        with cluster(small, large, n_ctx=[2048, 8192]) as client:
            raw = ask(client)
        assert raw.headers["x-booagent-node"] == "b"

    def test_context_length_without_a_larger_member_is_returned(self) -> None:
        node = FaultServer("a", Scenario.CONTEXT_LENGTH)
        with cluster(node) as client, pytest.raises(openai.BadRequestError) as caught:
            ask(client)
        assert caught.value.code == "context_length_exceeded"
        assert node.requests == 1

    def test_malformed_chunk_in_a_whole_answer_is_retried(self) -> None:
        bad, good = FaultServer("a", Scenario.MALFORMED), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.parse().choices[0].message.content == "hello from b"

    def test_cut_in_a_whole_answer_is_retried(self) -> None:
        bad, good = FaultServer("a", Scenario.CUT), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.parse().choices[0].message.content == "hello from b"

    def test_a_whole_answer_without_done_after_its_finish_is_taken(self) -> None:
        """A node that ends its stream cleanly after the finishing chunk but sends no [DONE]
        gave a complete answer: it is not asked of another node."""
        bad, good = FaultServer("a", Scenario.NO_DONE), FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client)
        assert raw.parse().choices[0].message.content == "hello from a"
        assert raw.headers["x-booagent-attempts"] == "1" and good.requests == 0


class TestAfterTheFirstToken:
    """Once a stream has started, a failure ends it with an error, never a clean end."""

    @pytest.mark.parametrize(
        "scenario",
        [Scenario.CUT, Scenario.STALL, Scenario.MALFORMED, Scenario.ERROR_FRAME],
    )
    def test_stream_failure_raises_in_the_client(self, scenario: Scenario) -> None:
        bad = FaultServer("a", scenario, token_interval=0.05)
        good = FaultServer("b")
        with cluster(bad, good) as client:
            raw = ask(client, stream=True)
            received = ""
            with pytest.raises(openai.APIError) as caught:
                for chunk in raw.parse():
                    received += chunk.choices[0].delta.content or "" if chunk.choices else ""
        assert raw.headers["x-booagent-node"] == "a"
        assert received.startswith("hello")
        assert "failed after the answer began" in str(caught.value)

    def test_a_stream_without_done_after_its_finish_is_complete(self) -> None:
        """Ending cleanly after the finishing chunk without [DONE] is a complete answer: the
        client gets the whole text, the finish reason and [DONE]."""
        bad = FaultServer("a", Scenario.NO_DONE, token_interval=0.05)
        with cluster(bad) as client:
            text, finish, node = stream_text(client)
        assert (text, finish, node) == ("hello from a", "stop", "a")

    def test_stream_error_frame_and_no_done(self) -> None:
        """On the wire: the last frame is an `error` object and `[DONE]` never comes."""
        bad = FaultServer("a", Scenario.CUT, token_interval=0.05)
        with bad.in_thread(), running_gateway(_settings([bad])) as base:
            body = {"model": "booagent-cluster", "messages": HELLO, "stream": True}
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
                frames = [line for line in response.iter_lines() if line.startswith("data:")]
        assert '"error"' in frames[-1]
        assert "data: [DONE]" not in frames


class TestClientLeaves:
    """A client that goes away frees the node: its request there is closed, its slot given
    back, and the next client is served."""

    def test_leaving_a_whole_answer_closes_the_node_request(self) -> None:
        node = FaultServer("a", Scenario.SLOW_FIRST_TOKEN, delay=30)
        with node.in_thread(), running_gateway(_settings([node], policies=RELAXED)) as base:
            body = {"model": "booagent-cluster", "messages": HELLO}
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/v1/chat/completions", json=body, timeout=0.5)
            assert eventually(lambda: node.cancelled == 1)
            assert eventually(lambda: _in_flight(base, "a") == 0)
            node.scenario = Scenario.HEALTHY
            with sdk_for(base) as sdk:
                answer = sdk.chat.completions.create(model="booagent-cluster", messages=HELLO)
        assert answer.choices[0].message.content == "hello from a"

    def test_leaving_a_stream_closes_the_node_request(self) -> None:
        node = FaultServer("a", Scenario.STALL, fault_after=1, ping_interval=0.05)
        with node.in_thread(), running_gateway(_settings([node], policies=RELAXED)) as base:
            body = {"model": "booagent-cluster", "messages": HELLO, "stream": True}
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                assert any("hello" in line for line in lines)
            assert eventually(lambda: node.cancelled == 1)
            assert eventually(lambda: _in_flight(base, "a") == 0)


def _in_flight(base: str, node: str) -> int:
    nodes = httpx.get(f"{base}/v1/cluster").json()["nodes"]
    return int(next(n["in_flight"] for n in nodes if n["name"] == node))


class TestBreaker:
    def test_flapping_node_opens_then_recovers(self) -> None:
        """Failures open the breaker (the node is skipped); once healthy it is tried again
        after the open period and closes."""
        flappy, steady = FaultServer("a", Scenario.RESET), FaultServer("b")
        with cluster(flappy, steady) as client:
            for _ in range(3):
                assert ask(client).headers["x-booagent-node"] == "b"
            assert flappy.requests == 2
            flappy.scenario = Scenario.HEALTHY
            assert eventually(lambda: ask(client).headers["x-booagent-node"] == "a", 10)

    def test_cluster_view_reports_the_open_breaker(self) -> None:
        bad, good = FaultServer("a", Scenario.RESET), FaultServer("b")
        with ExitStack() as stack:
            for node in (bad, good):
                stack.enter_context(node.in_thread())
            base = stack.enter_context(running_gateway(_settings([bad, good])))
            sdk = stack.enter_context(sdk_for(base))
            for _ in range(2):
                sdk.chat.completions.create(model="booagent-cluster", messages=HELLO)
            view = {n["name"]: n for n in httpx.get(f"{base}/v1/cluster").json()["nodes"]}
        assert view["a"]["breaker"] == "open"
        assert "unreachable" in view["a"]["last_error"]
        assert view["b"]["breaker"] == "closed"


class TestEveryNodeDown:
    def test_all_failed_is_502_and_says_do_not_retry(self) -> None:
        a, b = FaultServer("a", Scenario.RESET), FaultServer("b", Scenario.SERVER_ERROR_ONCE)
        b.scenario = Scenario.RESET
        with cluster(a, b) as client, pytest.raises(openai.APIStatusError) as caught:
            ask(client)
        response = caught.value.response
        assert response.status_code == 502
        assert response.headers["x-should-retry"] == "false"
        assert caught.value.code == "all_nodes_failed"

    def test_ready_is_503_when_no_node_answers(self) -> None:
        node = FaultServer("a")
        node.health_status = "reset"
        with node.in_thread(), running_gateway(_settings([node])) as base:
            assert eventually(lambda: httpx.get(f"{base}/ready").status_code == 503)


class TestAdmission:
    """A node never gets more requests at once than it has slots; the rest queue."""

    def test_single_slot_node_serves_one_at_a_time(self) -> None:
        node = FaultServer("a", token_interval=0.05)
        with cluster(node, policies=RELAXED) as client, ThreadPoolExecutor(6) as pool:
            texts = list(pool.map(lambda _: stream_text(client)[0], range(6)))
        assert texts == ["hello from a"] * 6
        assert node.max_active == 1

    def test_capacity_is_learned_from_props(self) -> None:
        """A llama-server with 3 slots gets up to 3 requests at once."""
        node = FaultServer("a", token_interval=0.1)
        node.slots = 3
        with cluster(node, policies=RELAXED) as client, ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda _: stream_text(client), range(6)))
        assert node.max_active == 3

    def test_queue_timeout_is_429_with_retry_after(self) -> None:
        node = FaultServer("a", token_interval=0.5)
        with ExitStack() as stack:
            stack.enter_context(node.in_thread())
            settings = _settings([node])
            timeouts = msgspec.structs.replace(settings.policies.timeouts, queue=0.3)
            policies = msgspec.structs.replace(settings.policies, timeouts=timeouts)
            base = stack.enter_context(
                running_gateway(msgspec.structs.replace(settings, policies=policies))
            )
            pool = stack.enter_context(ThreadPoolExecutor(2))
            body = {"model": "booagent-cluster", "messages": HELLO}
            url = f"{base}/v1/chat/completions"
            replies = list(pool.map(lambda _: httpx.post(url, json=body, timeout=10), range(2)))
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200, 429]
        refused = next(r for r in replies if r.status_code == 429)
        assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "queue_timeout"
