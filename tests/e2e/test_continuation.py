"""A real node SIGKILLed mid-answer: the other node of its member goes on with the answer.

Two SmolLM2-135M nodes of one member (one thread each). The node serving a stream is killed
after a dozen tokens; the official SDK still reads one answer to its end (`[DONE]`, a
`finish_reason`), whose `booagent` object names both nodes. The sibling is asked on
`/v1/completions` with the member's own chat template (`llama_cpp.server`), or with the answer
so far as a final assistant message (native `llama-server`, which sends it back first).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import SMOL, Cluster, start_cluster, stop_cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e

STORY = [{"role": "user", "content": "Tell me a story about a lighthouse keeper and a storm."}]
ASK: dict[str, Any] = {
    "model": SMOL, "messages": STORY, "max_tokens": 96, "temperature": 0,
    "stream_options": {"include_usage": True},
}  # fmt: skip
KILL_AFTER = 12
"""Content chunks the client reads before the serving node is killed."""


class Tee(httpx.BaseTransport):
    """The SDK's transport, keeping a copy of every byte of the responses it reads."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        return httpx.Response(
            response.status_code, headers=response.headers,
            stream=_Copied(response, self.seen), extensions=response.extensions,
        )  # fmt: skip

    def close(self) -> None:
        self.inner.close()


class _Copied(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, into: bytearray) -> None:
        self.response, self.into = response, into

    def __iter__(self) -> Iterator[bytes]:
        for part in self.response.stream:  # type: ignore[union-attr]
            self.into.extend(part)
            yield part

    def close(self) -> None:
        self.response.close()


def killed_mid_answer(cluster: Cluster, base: str) -> tuple[str, list[Any], str, bytes]:
    """Stream ASK, SIGKILL the serving node after KILL_AFTER tokens, read on to the end.
    Returns the text, the chunks, the killed node and the bytes the SDK read."""
    tee = Tee()
    with openai.OpenAI(
        base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120,
        http_client=httpx.Client(transport=tee),
    ) as sdk:  # fmt: skip
        raw = sdk.chat.completions.with_raw_response.create(**ASK, stream=True)
        victim = raw.headers["x-booagent-node"]
        stream = iter(raw.parse())
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) == KILL_AFTER:
                break
        cluster.supervisor.kill(victim)
        chunks.extend(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, victim, bytes(tee.seen)


def uninterrupted(base: str) -> str:
    with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=120) as sdk:
        return sdk.chat.completions.create(**ASK).choices[0].message.content or ""


def check(text: str, chunks: list[Any], wire: bytes, reference: str, victim: str) -> str:
    """The answer is whole and says where it went on; returns the node that went on."""
    assert wire.rstrip().endswith(b"data: [DONE]") and b'data: {"error"' not in wire
    assert len({c.id for c in chunks}) == 1
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    record = chunks[-1].model_extra["booagent"]
    (handed,) = record["continued"]
    assert handed["from"] == victim and handed["to"] != victim
    assert handed["reason"] in {"unreachable", "protocol_error"}
    assert record["calls"][0]["attempts"] == 2
    cut = handed["after_chars"]
    assert 0 < cut < len(text) and text[:cut] == reference[:cut], "the first part is the node's"
    assert chunks[-1].usage.completion_tokens >= len(reference) // 8
    return str(handed["to"])


@pytest.fixture
def llama_cpp_twins(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster([("smol-a", SMOL), ("smol-b", SMOL)], tmp_path, threads=1)
    yield cluster
    stop_cluster(cluster)


def test_a_killed_llama_cpp_server_is_continued_by_its_twin(llama_cpp_twins: Cluster) -> None:
    with running_gateway(llama_cpp_twins.settings()) as base:
        reference = uninterrupted(base)
        text, chunks, victim, wire = killed_mid_answer(llama_cpp_twins, base)
    survivor = check(text, chunks, wire, reference, victim)
    assert {victim, survivor} == {"smol-a", "smol-b"}


@pytest.fixture
def mixed_twins(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(
        [("smol-a", SMOL), ("smol-native", SMOL)], tmp_path, threads=1,
        native=frozenset({"smol-native"}),
    )  # fmt: skip
    cluster.node_named("smol-native")["priority"] = 1  # smol-a answers first
    yield cluster
    stop_cluster(cluster)


def test_a_native_llama_server_continues_without_repeating_the_answer(
    mixed_twins: Cluster,
) -> None:
    """The native node sends the prefilled answer back before its new text; the client gets
    each part once."""
    with running_gateway(mixed_twins.settings()) as base:
        reference = uninterrupted(base)
        text, chunks, victim, wire = killed_mid_answer(mixed_twins, base)
    assert victim == "smol-a"
    assert check(text, chunks, wire, reference, victim) == "smol-native"
    cut = chunks[-1].model_extra["booagent"]["continued"][0]["after_chars"]
    assert text[:cut] not in text[cut:], "the part before the cut is not sent twice"
