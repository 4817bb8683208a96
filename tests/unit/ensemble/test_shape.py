"""Tests for ensemble.shape: instructions of form become grammars llama.cpp accepts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import llama_cpp
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ensemble.checks import Checker
from ensemble.classify import Kind
from ensemble.shape import Shape, grammar, merged
from tests.e2e.conftest import SMOL, model_file


def grammar_of(prompt: str) -> str | None:
    return Checker.of({"messages": [{"role": "user", "content": prompt}]}, Kind.STRUCTURED).grammar


@pytest.fixture(scope="module")
def vocab() -> Iterator[object]:
    """A real vocabulary (SmolLM2's, loaded without its weights) for llama.cpp's parser."""
    model = llama_cpp.Llama(str(model_file(SMOL)), vocab_only=True, verbose=False)
    yield llama_cpp.llama_model_get_vocab(model.model)
    model.close()


@pytest.fixture(scope="module")
def parses(vocab: object) -> Callable[[str], bool]:
    """Whether llama.cpp builds a grammar sampler from the text (NULL on a syntax error)."""

    def check(text: str) -> bool:
        for low, high in re.findall(r"\{(\d+),(\d+)\}", text):
            assert int(low) <= int(high), "llama.cpp loops forever on {m,n} with m > n"
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    return check


def test_the_parser_refuses_a_broken_grammar(parses: Callable[[str], bool]) -> None:
    assert not parses("root ::= [") and not parses("root ::= undefined-rule")


class TestMerged:
    def test_bounds_and_letters_combine(self) -> None:
        shape = merged([Shape(min_words=3), Shape(max_words=5), Shape(without="a"),
                        Shape(without="e", case="lower")])  # fmt: skip
        assert shape == Shape(min_words=3, max_words=5, without="ae", case="lower")

    @pytest.mark.parametrize(
        "shapes",
        [
            [Shape(min_words=6), Shape(max_words=5)],
            [Shape(case="lower"), Shape(case="upper")],
            [Shape(lines=2), Shape(lines=3)],
            [Shape(lines=2), Shape(max_words=4)],
            [Shape(prefix="Apple"), Shape(without="a")],
            [Shape(prefix="Hi"), Shape(prefix="Hello")],
            [Shape(prefix="One two three"), Shape(max_words=2)],
        ],
    )
    def test_contradictions_have_no_shape(self, shapes: list[Shape]) -> None:
        assert merged(shapes) is None


class TestGrammar:
    def test_exact_word_count(self, parses: Callable[[str], bool]) -> None:
        text = grammar_of("Write a greeting in exactly seven words.")
        assert text is not None and "(sep word){6,6}" in text and parses(text)

    def test_a_start_counts_as_words(self) -> None:
        text = grammar_of("Start your answer with 'Answer:' and use exactly 5 words.")
        assert text is not None and text.startswith('root ::= "Answer:" (sep word){4,4}')

    def test_a_banned_letter_leaves_the_word_class(self, parses: Callable[[str], bool]) -> None:
        text = grammar_of("Without using the letter 'e', describe the sea.")
        assert text is not None and parses(text)
        word_class = re.search(r"word ::= \[([^\]]*)\]", text)
        assert word_class is not None and not {"e", "E"} & set(word_class.group(1))

    def test_lines(self, parses: Callable[[str], bool]) -> None:
        text = grammar_of("Write two lines about rain, all lowercase.")
        assert text is not None and '("\\n" line){1}' in text and parses(text)

    @pytest.mark.parametrize(
        "prompt",
        [
            "Return a JSON object with the key name.",  # JSON: no grammar of ours
            "Use the word 'banana' exactly twice.",  # counted occurrences: no shape
            "Tell me about the moon.",  # no instruction at all
            "Answer in exactly three words, in exactly five words.",  # contradicts itself
        ],
    )
    def test_no_grammar_where_a_shape_cannot_say_it(self, prompt: str) -> None:
        assert grammar_of(prompt) is None

    @given(
        shapes=st.lists(
            st.builds(
                Shape,
                min_words=st.one_of(st.none(), st.integers(0, 20)),
                max_words=st.one_of(st.none(), st.integers(0, 20)),
                lines=st.one_of(st.none(), st.integers(1, 4)),
                case=st.sampled_from([None, "lower", "upper"]),
                without=st.text(alphabet="abcxyz", max_size=3),
                prefix=st.sampled_from(["", "Today", "Answer:", "So, then"]),
                no_commas=st.booleans(),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def test_every_possible_shape_is_a_valid_grammar(
        self, parses: Callable[[str], bool], shapes: list[Shape]
    ) -> None:
        """Whatever instructions that agree combine to, llama.cpp parses the grammar (shapes
        that contradict each other merge to None and are not drawn; hypothesis fails the test
        if too few agree)."""
        shape = merged(shapes)
        assume(shape is not None)
        assert shape is not None and parses(grammar(shape))
