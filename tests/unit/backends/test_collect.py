"""Tests for backends.collect: a whole answer assembled from streamed chunks."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from backends.base import Chunk
from backends.collect import Accumulator, estimate_prompt_tokens
from tests.fakes import accumulate, node_chunk, tool_fragment


class TestToolCalls:
    @given(
        calls=st.lists(st.text(max_size=30), min_size=1, max_size=3),
        data=st.data(),
    )
    def test_any_interleaving_of_fragments_rebuilds_the_arguments(
        self, calls: list[str], data: st.DataObject
    ) -> None:
        """However the arguments are cut and interleaved, each call gets its own back."""
        pieces: list[list[str]] = []
        for arguments in calls:
            cuts = sorted(data.draw(st.sets(st.integers(0, len(arguments)), max_size=4)))
            bounds = [0, *cuts, len(arguments)]
            pieces.append([arguments[a:b] for a, b in pairwise(bounds)])
        queues = [[tool_fragment(i, id=f"call_{i}", name=f"f{i}")] for i in range(len(calls))]
        for i, parts in enumerate(pieces):
            queues[i] += [tool_fragment(i, arguments=p) for p in parts if p]
        accumulator = Accumulator()
        while any(queues):
            pending = [q for q in queues if q]
            accumulator.add(data.draw(st.sampled_from(pending)).pop(0))
        merged = accumulator.calls()
        assert [c["function"]["arguments"] for c in merged] == calls
        assert [c["id"] for c in merged] == [f"call_{i}" for i in range(len(calls))]
        assert [c["function"]["name"] for c in merged] == [f"f{i}" for i in range(len(calls))]


class TestUsage:
    def test_node_usage_is_used_when_sent(self) -> None:
        """The node's own counts win over the estimate."""
        usage_only = Chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
        accumulator = accumulate(node_chunk({"content": "a"}), usage_only, prompt_estimate=100)
        assert accumulator.usage() == {
            "prompt_tokens": 7,
            "completion_tokens": 2,
            "total_tokens": 9,
        }

    def test_falls_back_to_counted_tokens(self) -> None:
        """Without node usage, content chunks are counted and the prompt is estimated."""
        accumulator = accumulate(
            node_chunk({"role": "assistant"}),
            node_chunk({"content": "a"}),
            node_chunk({"content": "b"}),
            node_chunk({"reasoning_content": "c"}),
            node_chunk({}, finish="stop"),
            prompt_estimate=12,
        )
        assert accumulator.usage() == {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
        }

    def test_partial_node_usage_is_completed(self) -> None:
        """A usage object missing a count has that count filled in."""
        accumulator = accumulate(
            node_chunk({"content": "a"}, usage={"completion_tokens": 5}), prompt_estimate=4
        )
        assert accumulator.usage() == {
            "prompt_tokens": 4,
            "completion_tokens": 5,
            "total_tokens": 9,
        }

    def test_prompt_estimate(self) -> None:
        """About four characters a token plus four tokens per message."""
        messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": None}]
        assert estimate_prompt_tokens(messages) == 10 + 8
        assert estimate_prompt_tokens("not a list") == 0
