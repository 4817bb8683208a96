"""Operating the gateway in process (AsyncTestClient over fake nodes): named keys reloaded
while serving, per-key limits, fair turns between clients, metrics, the cluster's status."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from backends.config import Member
from backends.errors import NodeUnreachable
from gateway.app import create_app, reload_on_hangup
from gateway.keys import digest
from tests.fakes import FakeNode, fake_pool, settings_for, until
from tests.harness import running_gateway

pytestmark = pytest.mark.anyio

M1 = Member(name="m1")
HELLO = {"model": "booagent-cluster", "messages": [{"role": "user", "content": "hi"}]}
ALICE, BOB = "sk-alice-0123456789", "sk-bob-0123456789"


def _keys(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


def _app(*nodes: FakeNode, **server: Any) -> Any:
    settings = settings_for([M1], [(n.name, "m1") for n in nodes], server=server)
    pool = fake_pool([(n, M1) for n in nodes])
    return create_app(settings, pool_factory=lambda _: pool)


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _chat(client: Any, key: str, **body: Any) -> Any:
    return await client.post("/v1/chat/completions", json={**HELLO, **body}, headers=_bearer(key))


class TestNamedKeys:
    async def test_log_lines_name_the_key_never_the_key_itself(self, tmp_path: Path) -> None:
        """A key from the file (by its digest or as itself) lets its client in; the request's
        log lines carry the key's name and nowhere the key."""
        path = _keys(tmp_path / "keys.yaml", [
            {"name": "alice", "sha256": digest(ALICE)}, {"name": "bob", "key": BOB},
        ])  # fmt: skip
        async with AsyncTestClient(_app(FakeNode("a"), keys_file=str(path))) as client:
            with capture_logs(processors=[merge_contextvars]) as logs:
                assert (await _chat(client, ALICE)).status_code == 200
                assert (await _chat(client, BOB)).status_code == 200
                refused = await _chat(client, "sk-nobody-012345")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        lines = [e for e in logs if e["event"] == "chat_completion"]
        assert [line["key"] for line in lines] == ["alice", "bob"]
        assert ALICE not in repr(logs) and BOB not in repr(logs)

    async def test_a_changed_keys_file_is_in_force_without_a_restart(self, tmp_path: Path) -> None:
        """Rewriting the file swaps the keys while the gateway serves: the removed key is
        refused and the new one let in, within a few seconds."""
        path = _keys(tmp_path / "keys.yaml", [{"name": "alice", "key": ALICE}])
        async with AsyncTestClient(_app(FakeNode("a"), keys_file=str(path))) as client:
            assert (await _chat(client, ALICE)).status_code == 200
            assert (await _chat(client, BOB)).status_code == 401
            with capture_logs() as logs:
                _keys(path, [{"name": "bob", "key": BOB}])
                with anyio.fail_after(5):
                    while (await _chat(client, BOB)).status_code != 200:
                        await asyncio.sleep(0.1)
            assert (await _chat(client, ALICE)).status_code == 401
        reloaded = [e for e in logs if e["event"] == "keys_reloaded"]
        assert reloaded and reloaded[0]["names"] == ["bob"]

    async def test_a_broken_keys_file_keeps_the_keys_in_force(self, tmp_path: Path) -> None:
        """A file that does not load changes nothing; the error is logged without keys."""
        path = _keys(tmp_path / "keys.yaml", [{"name": "alice", "key": ALICE}])
        async with AsyncTestClient(_app(FakeNode("a"), keys_file=str(path))) as client:
            with capture_logs() as logs:
                path.write_text(f"keys:\n  - name: bob\n    key: {BOB}\n    rate: 3\n")
                with anyio.fail_after(5):
                    while not [e for e in logs if e["event"] == "keys_reload_failed"]:
                        await asyncio.sleep(0.1)
            assert (await _chat(client, ALICE)).status_code == 200
            assert (await _chat(client, BOB)).status_code == 401
        (failed,) = [e for e in logs if e["event"] == "keys_reload_failed"]
        assert "rate" in failed["error"] and BOB not in repr(logs)


class TestLimits:
    async def test_over_its_rate_a_key_gets_a_429_with_retry_after(self, tmp_path: Path) -> None:
        """The third request in a minute of a key limited to two is an OpenAI-shaped 429
        saying when to come back; another key is not affected."""
        path = _keys(tmp_path / "keys.yaml", [
            {"name": "alice", "key": ALICE, "limits": {"requests_per_minute": 2}},
            {"name": "bob", "key": BOB},
        ])  # fmt: skip
        async with AsyncTestClient(_app(FakeNode("a"), keys_file=str(path))) as client:
            statuses = [(await _chat(client, ALICE)).status_code for _ in range(2)]
            refused = await _chat(client, ALICE)
            other = await _chat(client, BOB)
        assert statuses == [200, 200] and other.status_code == 200
        assert refused.status_code == 429
        assert 55 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")

    async def test_a_request_larger_than_the_key_allows_is_a_400(self, tmp_path: Path) -> None:
        """``max_tokens`` over the key's limit is refused by name; a request without one is
        sent with the limit."""
        node = FakeNode("a")
        app = _app(node, limits={"max_tokens": 64})
        async with AsyncTestClient(app) as client:
            refused = await client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 500})
            answered = await client.post("/v1/chat/completions", json=HELLO)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"
        assert answered.status_code == 200
        assert [r.body["max_tokens"] for r in node.requests] == [64]

    async def test_a_refused_request_does_not_count_as_in_flight(self) -> None:
        """A request refused for its size leaves no request at once behind."""
        app = _app(FakeNode("a"), limits={"max_tokens": 64, "concurrent": 1})
        async with AsyncTestClient(app) as client:
            await client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 500})
            answered = await client.post("/v1/chat/completions", json=HELLO)
        assert answered.status_code == 200


async def test_a_flooding_client_does_not_starve_another(tmp_path: Path) -> None:
    """Two clients on one busy node (the real server, real connections): the quiet one's
    request, sent after the flood's eight, waits for one turn of the flood (the request
    in flight, then the next one), not for all eight."""
    path = _keys(tmp_path / "keys.yaml", [
        {"name": "flood", "key": ALICE}, {"name": "quiet", "key": BOB},
    ])  # fmt: skip
    node = FakeNode("a", reply="one two three", delay=0.05)  # each turn ends well apart
    pool = fake_pool([(node, M1)])
    settings = settings_for([M1], [("a", "m1")], server={"keys_file": str(path)})
    done: list[str] = []

    async def ask(client: httpx.AsyncClient, key: str, name: str) -> None:
        response = await client.post("/v1/chat/completions", json=HELLO, headers=_bearer(key))
        assert response.status_code == 200
        done.append(name)

    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            anyio.create_task_group() as tasks,
        ):
            for _ in range(8):
                tasks.start_soon(ask, client, ALICE, "flood")
            await until(lambda: pool.nodes[0].admission.queued == 7)
            tasks.start_soon(ask, client, BOB, "quiet")
    assert done.index("quiet") == 2
    assert len(done) == 9


async def test_metrics_parse_and_carry_bounded_labels(tmp_path: Path) -> None:
    """`GET /metrics` is the Prometheus format: requests by key and status, a node's failure
    by cause, the node's state and breaker; no label holds a request id or a key."""
    path = _keys(tmp_path / "keys.yaml", [{"name": "alice", "key": ALICE}])
    bad = FakeNode("a", fail_before=NodeUnreachable("a", "refused"))
    app = _app(bad, keys_file=str(path))
    async with AsyncTestClient(app) as client:
        failed = await _chat(client, ALICE)
        scraped = await client.get("/metrics", headers=_bearer(ALICE))
        unauthorised = await client.get("/metrics")
    assert failed.status_code == 502 and unauthorised.status_code == 401
    assert scraped.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    (requests,) = [s for s in families["booagent_requests"].samples if s.name.endswith("_total")]
    assert requests.labels["key"] == "alice" and requests.labels["status"] == "502"
    assert requests.value == 1
    failures = [s for s in families["booagent_node_failures"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in failures] == [({"node": "a", "cause": "unreachable"}, 2)]
    up = {s.labels["node"]: s.value for s in families["booagent_node_up"].samples}
    assert up == {"a": 0.0}  # two failures open its breaker
    (state,) = families["booagent_node_state"].samples
    assert state.labels == {"node": "a", "state": "ready", "breaker": "open"}
    assert failed.headers["x-request-id"] not in scraped.text
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["booagent_event_loop_tasks"].samples[0].value >= 1
    assert ALICE not in scraped.text


async def test_the_cluster_status_lists_recent_requests_and_throughput() -> None:
    """`GET /v1/cluster` says what the last requests did and the last minute's throughput."""
    async with AsyncTestClient(_app(FakeNode("a", reply="one two"))) as client:
        await client.post("/v1/chat/completions", json=HELLO)
        status = (await client.get("/v1/cluster")).json()
    (last,) = status["requests"]
    assert (last["status"], last["node"], last["key"], last["tokens_out"]) == (
        200, "a", "anonymous", 2,
    )  # fmt: skip
    assert status["throughput"]["tokens_per_second"] == pytest.approx(2 / 60, abs=0.01)
    assert status["keys"]["anonymous"]["requests"] == 1


async def test_sighup_reloads_the_keys_while_serving() -> None:
    """SIGHUP calls the reload the app registered for the time it serves, and only then."""
    assert threading.current_thread() is threading.main_thread()  # else SIGHUP kills pytest
    reloads: list[int] = []
    with reload_on_hangup(lambda: reloads.append(1)):
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: reloads == [1])
    assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None)
