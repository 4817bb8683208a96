"""The gateway over real llama.cpp nodes, driven by the official `openai` SDK."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import CODER, SMOL, Cluster
from tests.harness import eventually, running_gateway

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Say hello in five words."}]


@pytest.fixture(scope="module")
def gateway_url(real_cluster: Cluster) -> Iterator[str]:
    with running_gateway(real_cluster.settings()) as base:
        yield base


@pytest.fixture
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0)


class TestModels:
    def test_virtual_model_first_then_members(self, client: openai.OpenAI) -> None:
        """The listing names the virtual model first, its strategies, then every member."""
        ids = [m.id for m in client.models.list()]
        names = ("auto", "route", "cascade", "ensemble", "program", "tested")
        strategies = [f"booagent-cluster:{s}" for s in names]
        assert ids == ["booagent-cluster", *strategies, SMOL, CODER]

    def test_short_path_for_open_webui(self, gateway_url: str) -> None:
        """`GET /models` answers like `/v1/models` (Open WebUI may call either)."""
        body = httpx.get(f"{gateway_url}/models").json()
        assert body["data"][0]["id"] == "booagent-cluster"


class TestCompletion:
    def test_non_streaming_answer_names_the_virtual_model(self, client: openai.OpenAI) -> None:
        """A plain completion comes back complete, under the requested model name."""
        raw = client.chat.completions.with_raw_response.create(
            model="booagent-cluster", messages=HELLO, max_tokens=16, temperature=0, seed=1
        )
        done = raw.parse()
        assert done.model == "booagent-cluster"
        assert done.choices[0].message.role == "assistant"
        assert done.choices[0].message.content
        assert done.usage is not None and done.usage.completion_tokens > 0
        assert raw.headers["x-booagent-node"] in ("smol-1", "coder-1")
        assert raw.headers["x-booagent-attempts"] == "1"
        assert raw.headers["x-request-id"]

    def test_stream_keeps_one_id_and_sends_role_first(self, client: openai.OpenAI) -> None:
        """Every chunk has the same id; the first delta carries the role."""
        chunks = list(
            client.chat.completions.create(
                model="booagent-cluster", messages=HELLO, max_tokens=16, stream=True, temperature=0
            )
        )
        assert len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        assert all(c.model == "booagent-cluster" for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")

    def test_stream_include_usage_ends_with_usage_chunk(self, client: openai.OpenAI) -> None:
        """With include_usage the last chunk has no choices and the usage; others usage=None."""
        chunks = list(
            client.chat.completions.create(
                model="booagent-cluster",
                messages=HELLO,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        last = chunks[-1]
        assert last.choices == [] and last.usage is not None
        content_chunks = [c for c in chunks[:-1] if c.choices and c.choices[0].delta.content]
        assert last.usage.completion_tokens == len(content_chunks)
        assert all(c.usage is None for c in chunks[:-1])

    def test_stream_is_event_stream(self, gateway_url: str) -> None:
        """Open WebUI detects streams by the content type alone."""
        body = {"model": "booagent-cluster", "messages": HELLO, "max_tokens": 4, "stream": True}
        with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in response.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"

    def test_sampling_parameters_pass_through(self, client: openai.OpenAI) -> None:
        """A stop sequence reaches the node: the answer ends before it."""
        done = client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "Count from 1 to 10 separated by commas."}],
            max_tokens=40,
            temperature=0,
            stop=["5"],
        )
        assert "5" not in (done.choices[0].message.content or "")


class TestRouting:
    def test_code_question_lands_on_the_code_node(self, client: openai.OpenAI) -> None:
        """A Python question goes to the code member."""
        raw = client.chat.completions.with_raw_response.create(
            model="booagent-cluster",
            messages=[{"role": "user", "content": "Write a Python function that adds two ints."}],
            max_tokens=24,
        )
        assert raw.headers["x-booagent-node"] == "coder-1"

    def test_open_webui_chore_goes_to_the_fast_member(self, client: openai.OpenAI) -> None:
        """`### Task:` requests go to the fastest idle member."""
        task = "### Task:\nGenerate a concise, 3-5 word title for the chat history.\n<chat_history>"
        raw = client.chat.completions.with_raw_response.create(
            model="booagent-cluster", messages=[{"role": "user", "content": task}], max_tokens=12
        )
        assert raw.headers["x-booagent-node"] == "smol-1"

    def test_member_by_name(self, client: openai.OpenAI) -> None:
        """Asking for a member by name is served by a node carrying it."""
        raw = client.chat.completions.with_raw_response.create(
            model=CODER, messages=HELLO, max_tokens=8
        )
        assert raw.headers["x-booagent-node"] == "coder-1"
        assert raw.parse().model == CODER


class TestBadInput:
    def test_unknown_model_is_404_model_not_found(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-17", messages=HELLO)
        assert caught.value.code == "model_not_found"

    def test_wrong_type_names_the_field(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="booagent-cluster",
                messages=HELLO,
                temperature="hot",  # type: ignore[arg-type]
            )
        assert caught.value.body["param"] == "temperature"  # type: ignore[index]

    def test_malformed_json_is_400(self, gateway_url: str) -> None:
        response = httpx.post(
            f"{gateway_url}/v1/chat/completions",
            content=b'{"model": "booagent-cluster", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400
        assert "not valid JSON" in response.json()["error"]["message"]

    def test_missing_messages_is_400_naming_it(self, gateway_url: str) -> None:
        response = httpx.post(
            f"{gateway_url}/v1/chat/completions", json={"model": "booagent-cluster"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "messages"

    def test_unknown_path_is_openai_shaped_404(self, gateway_url: str) -> None:
        response = httpx.get(f"{gateway_url}/v1/nothing-here")
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    def test_bad_request_does_not_disturb_a_stream_in_flight(self, client: openai.OpenAI) -> None:
        """A bad request arriving mid-stream leaves that stream whole."""
        stream = client.chat.completions.create(
            model=SMOL, messages=HELLO, max_tokens=24, stream=True, temperature=0
        )
        first = next(iter(stream))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="booagent-cluster", messages=[])
        rest = list(stream)
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].choices[0].finish_reason in ("stop", "length")


class TestHealthEndpoints:
    def test_ready_and_cluster_state(self, gateway_url: str) -> None:
        assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{gateway_url}/ready").status_code == 200
        nodes = httpx.get(f"{gateway_url}/v1/cluster").json()["nodes"]
        assert {n["name"]: n["state"] for n in nodes} == {"smol-1": "ready", "coder-1": "ready"}
        assert all(n["capacity"] == 1 and n["kind"] == "llama_cpp_server" for n in nodes)


class TestAuth:
    def test_keys_required_when_configured(self, real_cluster: Cluster) -> None:
        """With keys set: no key and a wrong key are 401, the right key works."""
        with running_gateway(real_cluster.settings(api_keys=["s3cret"])) as base:
            anonymous = httpx.get(f"{base}/v1/models")
            assert anonymous.status_code == 401
            assert anonymous.json()["error"]["type"] == "authentication_error"
            wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
            with wrong, pytest.raises(openai.AuthenticationError):
                wrong.models.list()
            good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
            with good:
                assert good.chat.completions.create(model=SMOL, messages=HELLO, max_tokens=4)

    def test_empty_bearer_accepted_when_auth_is_off(self, gateway_url: str) -> None:
        """Open WebUI sends `Authorization: Bearer ` with no key (httpx refuses to, so raw)."""
        host, port = gateway_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \r\n"
                b"Connection: close\r\n\r\n"
            )
            reply = sock.makefile("rb").read()
        assert reply.startswith(b"HTTP/1.1 200")
        assert b"booagent-cluster" in reply

    def test_body_over_the_limit_is_413(self, real_cluster: Cluster) -> None:
        with running_gateway(real_cluster.settings(max_body_bytes=2000)) as base:
            big = [{"role": "user", "content": "x" * 5000}]
            response = httpx.post(
                f"{base}/v1/chat/completions", json={"model": SMOL, "messages": big}
            )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


class TestDisconnect:
    def test_client_leaving_frees_the_node(self, gateway_url: str, real_cluster: Cluster) -> None:
        """Closing a stream early stops generation on the node; the next request is served."""
        body = {
            "model": SMOL,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
            "max_tokens": 1500,
            "stream": True,
        }
        with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            [next(lines) for _ in range(6)]
        log = real_cluster.supervisor.log_path("smol-1")
        assert eventually(lambda: "Disconnected from client" in log.read_text())
        assert eventually(lambda: _in_flight(gateway_url, "smol-1") == 0)
        done = httpx.post(
            f"{gateway_url}/v1/chat/completions",
            json={"model": SMOL, "messages": HELLO, "max_tokens": 4},
            timeout=60,
        )
        assert done.status_code == 200


def _in_flight(base: str, node: str) -> int:
    nodes = httpx.get(f"{base}/v1/cluster").json()["nodes"]
    return int(next(n["in_flight"] for n in nodes if n["name"] == node))
