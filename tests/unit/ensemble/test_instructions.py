"""Checkable instructions: found in prompts, tested against answers."""

from __future__ import annotations

import pytest

from ensemble.instructions import failed_checks

CASES = [
    ("Describe the ocean in exactly five words.", "Vast blue deep salty waves.", []),
    ("Describe the ocean in exactly five words.", "The ocean is big.", ["words==5"]),
    ("Write a four-word sentence about music.", "Music makes us happy.", []),
    ("Describe a dog in fewer than 10 words.", "A loyal furry friend.", []),
    ("Summarise X in at most 3 words.", "one two three four", ["words<=3"]),
    ('Return a JSON object with the key "a". Output only the JSON.', '{"a": 1}', []),
    ('Return a JSON object with the key "a".', "Sure! a is 1", ["json"]),
    ("Output a JSON array of 3 strings.", '{"a": 1}', ["json_array"]),
    ("Write one sentence using only lowercase letters.", "cats are nice.", []),
    ("Write one sentence using only lowercase letters.", "Cats are nice.", ["lowercase"]),
    ("Say hello in all capital letters.", "HELLO!", []),
    ("Is the sky blue? Answer with only yes or no.", "Yes.", []),
    ("Is the sky blue? Answer with only yes or no.", "Yes, it is.", ["choice"]),
    ("Name exactly four colors as a comma-separated list.", "red, green, blue, pink", []),
    ("Name exactly four colors as a comma-separated list.", "red, green", ["csv==4"]),
    ("Give the steps as a numbered list of exactly 3 steps.", "1. a\n2. b\n3. c", []),
    ("List three fruits as a bulleted list.", "- apple\n- pear", ["list_items==3"]),
    ("Start your reply with 'Answer:' and name a city.", "Answer: Paris", []),
    ("End your reply with the exact phrase 'Bye!'", "Hello. Bye!", []),
    ("Write two sentences without using any commas.", "One, two.", ["no_commas"]),
    ("What is the opposite of hot? Reply with a single word.", "Cold", []),
]


@pytest.mark.parametrize(("prompt", "answer", "failed"), CASES)
def test_checks(prompt: str, answer: str, failed: list[str]) -> None:
    assert failed_checks(prompt, answer) == failed


def test_no_checkable_instruction_gives_none() -> None:
    assert failed_checks("Tell me about the moon.", "It orbits the earth.") is None
