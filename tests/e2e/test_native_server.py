"""A real native llama.cpp `llama-server` node beside a `llama_cpp.server` one.

What the gateway learns from it (kind, slots), exact usage, the cascade's confidence signal
(log-probs are free there), and a grammar that holds an answer to its instructions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import CODER, SMOL, Cluster, start_cluster, stop_cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e

FACT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """SmolLM2 on llama-server (2 slots), the 0.5B coder on llama_cpp.server."""
    cluster = start_cluster(
        [("native-smol", SMOL), ("coder-1", CODER)],
        tmp_path_factory.mktemp("native-logs"),
        native=frozenset({"native-smol"}),
    )
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="module")
def base(mixed: Cluster) -> Iterator[str]:
    strategies = {
        "keepalive_seconds": 0.2,
        "cascade": {"ladders": {"default": [SMOL, CODER]}, "confidence": 0.0, "constrain": True},
    }
    with running_gateway(mixed.settings(strategies)) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120) as sdk:
        yield sdk


def test_kind_and_slots_are_learned_from_the_node(base: str) -> None:
    nodes = {n["name"]: n for n in httpx.get(f"{base}/v1/cluster").json()["nodes"]}
    assert (nodes["native-smol"]["kind"], nodes["native-smol"]["capacity"]) == ("llama_server", 2)
    assert (nodes["coder-1"]["kind"], nodes["coder-1"]["capacity"]) == ("llama_cpp_server", 1)


def test_two_requests_run_side_by_side_on_its_two_slots(client: openai.OpenAI) -> None:
    def ask(_: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=SMOL, messages=FACT, max_tokens=8, temperature=0
        )
        assert raw.parse().choices[0].message.content
        return raw.headers["x-booagent-node"]

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(ask, range(4))) == ["native-smol"] * 4


def test_usage_is_the_nodes_own_in_whole_and_streamed_answers(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model=SMOL, messages=FACT, max_tokens=8, temperature=0)
    assert done.usage is not None and done.usage.prompt_tokens > 10
    chunks = list(
        client.chat.completions.create(
            model=SMOL, messages=FACT, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == done.usage.prompt_tokens


def test_the_cascade_judges_a_native_member_by_its_confidence(client: openai.OpenAI) -> None:
    """Log-probs are free on llama-server: the cheap step is decided by its mean token
    probability (no second sample), and the client, who did not ask, gets none."""
    done = client.chat.completions.create(
        model="booagent-cluster:cascade", messages=FACT, max_tokens=8, temperature=0
    )
    step = done.model_extra["booagent"]["steps"][0]  # type: ignore[index]
    assert step["member"] == SMOL and step["signal"] == "confidence"
    assert 0 < step["score"] <= 1 and step["accepted"], "threshold 0 accepts any answer"
    assert done.choices[0].logprobs is None
    assert len(done.model_extra["booagent"]["calls"]) == 1  # type: ignore[index]


def test_a_grammar_holds_the_answer_to_its_word_count(client: openai.OpenAI) -> None:
    """Asked for exactly three words, SmolLM2 writes a sentence (greedy, so always); the
    cascade asks again under the grammar and the answer has three."""
    messages = [{"role": "user", "content": "Describe the sea in exactly three words."}]
    done = client.chat.completions.create(
        model="booagent-cluster:cascade", messages=messages, max_tokens=32, temperature=0,
        extra_body={"booagent": {"members": [SMOL]}},
    )  # fmt: skip
    text = done.choices[0].message.content or ""
    assert len(re.findall(r"[A-Za-z0-9']+", text)) == 3, text
    steps = done.model_extra["booagent"]["steps"]  # type: ignore[index]
    assert steps[-1]["signal"] == "constrain" and steps[-1]["accepted"]


def test_no_process_is_left_when_the_cluster_stops(tmp_path: Path) -> None:
    cluster = start_cluster([("solo", SMOL)], tmp_path, native=frozenset({"solo"}))
    pid = cluster.supervisor.pid("solo")
    stop_cluster(cluster)
    assert pid is not None and not Path(f"/proc/{pid}").exists()
