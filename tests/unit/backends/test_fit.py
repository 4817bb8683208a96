"""Fitting requests to members' contexts: counted only when they might not fit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from backends.errors import PromptTooLong
from backends.fit import Counter, Estimate, Fitter, bound

pytestmark = pytest.mark.anyio

BIG_PROMPT = {"messages": [{"role": "user", "content": "x " * 3000}]}


class Fixed:
    """A counter that says ``tokens`` and remembers it was asked."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.asked = 0

    async def count(self, body: Mapping[str, Any]) -> int:
        self.asked += 1
        return self.tokens


def fitter(contexts: dict[str, int], counters: dict[str, Counter]) -> Fitter:
    return Fitter(contexts, lambda member: counters[member])


async def test_a_request_that_surely_fits_is_not_counted() -> None:
    """Its bytes (an upper bound on its tokens) fit every member: no tokenizer is asked."""
    counter = Fixed(10)
    fitted = await fitter({"a": 4096}, {"a": counter}).fit({"messages": []}, ())
    assert (fitted.members, fitted.skipped, counter.asked) == ((), (), 0)


async def test_a_member_too_small_for_the_prompt_is_left_out_and_named() -> None:
    fit = fitter({"small": 2048, "big": 16384}, {"small": Fixed(6623), "big": Fixed(6623)})
    fitted = await fit.fit(BIG_PROMPT, ("small", "big"))
    assert fitted.members == ("big",)
    assert fitted.skipped == ("small: prompt 6623 tokens, context 2048",)


async def test_nothing_fits_is_a_400_naming_the_sizes() -> None:
    fit = fitter({"a": 4096, "b": 2048}, {"a": Fixed(6623), "b": Fixed(6623)})
    with pytest.raises(PromptTooLong) as caught:
        await fit.fit(BIG_PROMPT, ())
    assert caught.value.status_code == 400 and caught.value.code == "context_length_exceeded"
    assert "a: prompt 6623 tokens, context 4096" in caught.value.message


async def test_max_tokens_is_clamped_to_what_the_context_leaves() -> None:
    fit = fitter({"a": 8192}, {"a": Fixed(6000)})
    body = {**BIG_PROMPT, "max_tokens": 4000}
    fitted = await fit.fit(body, ("a",))
    assert fitted.body_for(body, "a")["max_tokens"] == 2192
    assert fitted.body_for({**body, "max_tokens": 100}, "a")["max_tokens"] == 100


async def test_a_member_with_room_for_only_a_short_answer_is_kept_for_a_short_request() -> None:
    """The room an answer needs is the request's own max_tokens when it asks for less."""
    fit = fitter({"a": 6100}, {"a": Fixed(6000)})
    assert (await fit.fit({**BIG_PROMPT, "max_tokens": 50}, ("a",))).members == ("a",)
    with pytest.raises(PromptTooLong):
        await fit.fit(BIG_PROMPT, ("a",))


async def test_the_estimate_errs_long_and_the_bound_longer() -> None:
    """Three characters a token overestimates English text; bytes bound it from above."""
    estimated = await Estimate().count(BIG_PROMPT)
    assert 6000 / 3 <= estimated < bound(BIG_PROMPT)


async def test_members_without_nodes_are_left_to_the_pool() -> None:
    """A route may list members no node carries here; fitting ignores them."""
    fit = fitter({"a": 16384}, {"a": Fixed(6000)})
    assert (await fit.fit(BIG_PROMPT, ("gone", "a"))).members == ("gone", "a")
    assert (await fit.fit(BIG_PROMPT, ("gone",))).members == ("gone",)
