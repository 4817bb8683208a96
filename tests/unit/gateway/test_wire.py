"""Tests for gateway.wire: node chunks rewritten for the client."""

from __future__ import annotations

import json

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from backends.base import Chunk
from gateway.wire import Identity, client_chunk, completion, usage_chunk
from tests.fakes import accumulate, node_chunk, tool_fragment

IDENTITY = Identity(model="booagent", id="chatcmpl-test", created=1700000000)


class TestCompletion:
    def test_assembles_text_and_finish_reason(self) -> None:
        """Content deltas join into the message; the last finish reason is kept."""
        acc = accumulate(
            node_chunk({"role": "assistant"}),
            node_chunk({"content": "Hel"}),
            node_chunk({"content": "lo"}),
            node_chunk({}, finish="length"),
        )
        answer = completion(IDENTITY, acc, acc.usage())
        ChatCompletion.model_validate(answer)
        assert answer["id"] == "chatcmpl-test"
        assert answer["model"] == "booagent"
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
        assert answer["choices"][0]["finish_reason"] == "length"

    def test_finish_reason_defaults_to_stop(self) -> None:
        """A node that never says why it stopped finished normally."""
        acc = accumulate(node_chunk({"content": "x"}))
        answer = completion(IDENTITY, acc, acc.usage())
        assert answer["choices"][0]["finish_reason"] == "stop"

    def test_merges_tool_call_fragments_by_index(self) -> None:
        """Streamed tool-call pieces are joined per index, in index order."""
        acc = accumulate(
            tool_fragment(1, id="call_b", name="get_time", arguments="{}"),
            tool_fragment(0, id="call_a", name="get_weather"),
            tool_fragment(0, arguments='{"city": '),
            tool_fragment(0, arguments='"Paris"}'),
            node_chunk({}, finish="tool_calls"),
        )
        answer = completion(IDENTITY, acc, acc.usage())
        ChatCompletion.model_validate(answer)
        message = answer["choices"][0]["message"]
        assert message["content"] is None
        assert message["tool_calls"] == [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ]
        assert answer["choices"][0]["finish_reason"] == "tool_calls"

    def test_reasoning_logprobs_and_timings_are_kept(self) -> None:
        """Reasoning text, token logprobs and llama.cpp timings reach the whole answer."""
        token = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
        chunk = Chunk(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": "a"},
                        "logprobs": {"content": [token]},
                        "finish_reason": None,
                    }
                ],
                "timings": {"predicted_per_second": 12.5},
            }
        )
        acc = accumulate(node_chunk({"reasoning_content": "hmm"}), chunk)
        answer = completion(IDENTITY, acc, acc.usage())
        ChatCompletion.model_validate(answer)
        assert answer["choices"][0]["message"]["reasoning_content"] == "hmm"
        assert answer["choices"][0]["logprobs"] == {"content": [token]}
        assert answer["timings"] == {"predicted_per_second": 12.5}


class TestClientChunk:
    def test_rewrites_identity_and_adds_role_first(self) -> None:
        """Every chunk gets the answer's id and model; only the first delta gets the role."""
        chunks = [node_chunk({"content": "Hel"}), node_chunk({"content": "lo"})]
        out = [
            client_chunk(IDENTITY, c, first=i == 0, include_usage=False)
            for i, c in enumerate(chunks)
        ]
        assert all(o is not None for o in out)
        first, second = out[0] or {}, out[1] or {}
        for o in (first, second):
            ChatCompletionChunk.model_validate(o)
            assert (o["id"], o["model"], o["created"]) == ("chatcmpl-test", "booagent", 1700000000)
            assert o["object"] == "chat.completion.chunk"
            assert "usage" not in o
        assert first["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
        assert second["choices"][0]["delta"] == {"content": "lo"}

    def test_node_role_is_not_duplicated(self) -> None:
        """A node's own role delta stays a single role field."""
        out = client_chunk(
            IDENTITY, node_chunk({"role": "assistant"}), first=True, include_usage=False
        )
        assert out is not None
        assert out["choices"][0]["delta"] == {"role": "assistant"}

    def test_usage_only_node_chunks_are_dropped(self) -> None:
        """The node's usage chunk is not relayed; the gateway sends its own."""
        usage = Chunk({"id": "x", "choices": [], "usage": {"prompt_tokens": 1}})
        assert client_chunk(IDENTITY, usage, first=False, include_usage=True) is None

    def test_node_usage_never_leaks(self) -> None:
        """Usage on a content chunk is removed; with include_usage it is null until the end."""
        chunk = node_chunk({"content": "a"}, usage={"prompt_tokens": 1})
        assert "usage" not in (
            client_chunk(IDENTITY, chunk, first=False, include_usage=False) or {}
        )
        out = client_chunk(IDENTITY, chunk, first=False, include_usage=True)
        assert out is not None
        assert out["usage"] is None
        ChatCompletionChunk.model_validate(out)

    def test_usage_chunk(self) -> None:
        """The final usage chunk has no choices and the answer's identity."""
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        out = usage_chunk(IDENTITY, usage)
        ChatCompletionChunk.model_validate(out)
        assert out["choices"] == []
        assert out["usage"] == usage
        assert out["id"] == "chatcmpl-test"
        json.dumps(out)


class TestIdentity:
    def test_fresh_identities_differ(self) -> None:
        """Each answer gets its own id."""
        assert Identity("m").id != Identity("m").id
        assert Identity("m").id.startswith("chatcmpl-")
