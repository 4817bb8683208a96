"""Requests fitted to real members' contexts, and a request's own failure told from a node's.

The session's real nodes: SmolLM2-135M with a 2,048-token context and Qwen2.5-Coder-0.5B with
4,096, counted with their own GGUF vocabularies (the models the suite fetched). A long prompt
moves from the small member to the one that holds it and the answer says so; a prompt no member
holds is a 400 naming the sizes before any node is asked; a request the node itself fails
inside its answer (its context is smaller than the config says, as after a mistaken edit) is
the request's fault: a 400 to that client, while the node stays open to everyone else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import msgspec
import openai
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import CODER, SMOL, Cluster
from tests.harness import running_gateway

pytestmark = pytest.mark.e2e


def words(count: int, ask: str = "Reply with the single word OK.") -> list[dict[str, str]]:
    """A prompt of about ``count`` tokens on both members (`` hello`` is one token on each)."""
    return [{"role": "user", "content": "hello " * count + "\n\n" + ask}]


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def base(real_cluster: Cluster) -> Iterator[str]:
    with running_gateway(real_cluster.settings()) as url:
        yield url


def test_a_prompt_no_member_holds_is_400_naming_the_sizes(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(base).chat.completions.create(model="booagent-cluster", messages=words(6000))
    print(f"\nrefused after {time.monotonic() - started:.2f} s (counted, no node asked)")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert error["param"] == "messages"
    assert f"{SMOL}: prompt " in error["message"] and "context 2048" in error["message"]
    assert f"{CODER}: prompt " in error["message"] and "context 4096" in error["message"]


def test_a_prompt_too_long_for_the_first_member_moves_and_says_so(base: str) -> None:
    """A general prompt goes to SmolLM2 first; at 2,300 tokens it does not fit there, so the
    coder answers it, and both the header and the ``booagent`` object say why."""
    started = time.monotonic()
    raw = sdk(base).chat.completions.with_raw_response.create(
        model="booagent-cluster", messages=words(2300), max_tokens=8, temperature=0
    )
    print(f"\nanswered by {raw.headers['x-booagent-node']} in {time.monotonic() - started:.1f} s")
    answer = raw.parse()
    assert raw.headers["x-booagent-node"] == "coder-1"
    assert raw.headers["x-booagent-context"].startswith(f"{SMOL}: prompt ")
    record = (answer.model_extra or {})["booagent"]
    assert record["context"][0].endswith("context 2048")
    assert answer.usage is not None and answer.usage.prompt_tokens > 2048


def test_max_tokens_beyond_the_context_is_clamped_and_said(base: str) -> None:
    raw = sdk(base).chat.completions.with_raw_response.create(
        model=SMOL, messages=words(10, "Say hi."), max_tokens=5000, stop=["\n", "."]
    )
    clamped = raw.headers["x-booagent-context"]
    assert clamped.startswith(f"{SMOL}: max_tokens 5000 clamped to ")
    assert int(clamped.rsplit(" ", 1)[1]) < 2048
    assert raw.parse().choices[0].finish_reason in ("stop", "length")


@pytest.fixture(scope="module")
def misjudged(real_cluster: Cluster) -> Iterator[str]:
    """A gateway whose config gives the coder a 16,384-token context its node does not have:
    prompts the gateway lets through overflow the node, which fails them inside its answer."""
    settings = real_cluster.settings()
    members = [
        msgspec.structs.replace(m, n_ctx=16384) if m.name == CODER else m for m in settings.members
    ]
    wrong: Settings = msgspec.structs.replace(settings, members=members)
    with running_gateway(wrong) as url:
        yield url


def test_requests_that_fail_inside_a_healthy_node_cost_no_one(misjudged: str) -> None:
    """Five requests the node fails are each a 400 naming why, tried on the coder's one node
    only; its breaker stays closed and a normal request is served by it at once."""
    client = sdk(misjudged)
    for _ in range(5):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=CODER, messages=words(5000), max_tokens=8)
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "request_failed"
        assert "staying healthy" in error["message"] and "on 1 node" in error["message"]
    nodes = httpx.get(f"{misjudged}/v1/cluster").json()["nodes"]
    coder = next(n for n in nodes if n["name"] == "coder-1")
    assert (coder["breaker"], coder["state"], coder["failed"]) == ("closed", "ready", 0)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=CODER, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    print(f"\nnext request served in {time.monotonic() - started:.2f} s")
    assert raw.headers["x-booagent-node"] == "coder-1"
    assert raw.headers["x-booagent-attempts"] == "1"
