"""A real node process killed while requests flow: others take over, it comes back."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import SMOL, Cluster, start_cluster, stop_cluster
from tests.harness import eventually, running_gateway

pytestmark = pytest.mark.e2e

STORY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


@pytest.fixture
def twin_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Two nodes of the same member, so one can die while the other serves."""
    cluster = start_cluster([("smol-a", SMOL), ("smol-b", SMOL)], tmp_path)
    yield cluster
    stop_cluster(cluster)


def _states(base: str) -> dict[str, tuple[str, str]]:
    nodes = httpx.get(f"{base}/v1/cluster").json()["nodes"]
    return {n["name"]: (n["state"], n["breaker"]) for n in nodes}


def test_killed_node_is_routed_around_and_comes_back(twin_cluster: Cluster) -> None:
    """A stream on the killed node goes on on the other node (never a silent cut: its last
    chunk says so); every request not yet committed is served by the other node; the dead
    node is reported, then recovers."""
    with (
        running_gateway(twin_cluster.settings()) as base,
        openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120) as sdk,
    ):
        victim_stream = sdk.chat.completions.with_raw_response.create(
            model=SMOL, messages=STORY, max_tokens=200, stream=True, temperature=0.8
        )
        victim = victim_stream.headers["x-booagent-node"]
        survivor = "smol-b" if victim == "smol-a" else "smol-a"
        stream = victim_stream.parse()
        assert next(iter(stream)).choices[0].delta.role == "assistant"

        twin_cluster.supervisor.kill(victim)
        *_, last = stream
        assert last.model_extra["booagent"]["continued"][0]["to"] == survivor
        assert eventually(lambda: _states(base)[victim] != ("ready", "closed"), 10)

        def ask(_: int) -> str:
            raw = sdk.chat.completions.with_raw_response.create(
                model="booagent-cluster", messages=STORY, max_tokens=8
            )
            assert raw.parse().choices[0].message.content
            return raw.headers["x-booagent-node"]

        with ThreadPoolExecutor(4) as pool:
            served_by = list(pool.map(ask, range(6)))
            assert served_by.count(survivor) >= 1
            assert eventually(lambda: _states(base)[victim][0] == "ready", 30)
            # two at once: one of them finds the survivor busy and goes to the restarted node
            # (a node's first answers after a restart are slow, and speed weighs in only
            # between equally loaded nodes)
            assert eventually(lambda: victim in set(pool.map(ask, range(2))), 40)
