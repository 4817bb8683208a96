"""Checkable instructions: found in prompts, tested against answers."""

from __future__ import annotations

import pytest

from ensemble.instructions import broken_rules, failed_checks, instruction_checks

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
    ("Name three planets as a bulleted list.", "- Mars\n- Venus", ["list_items==3"]),
    ("Give 4 short reasons as a numbered list.", "1. a\n2. b\n3. c\n4. d", []),
    ("Give 4 short reasons as a numbered list.", "1. a\n2. b", ["list_items==4"]),
    ("Start your reply with 'Answer:' and name a city.", "Answer: Paris", []),
    ("End your reply with the exact phrase 'Bye!'", "Hello. Bye!", []),
    ("Write two sentences without using any commas.", "One, two.", ["no_commas"]),
    ("What is the opposite of hot? Reply with a single word.", "Cold", []),
    ("Give your answer as JSON: the capital of France.", '{"capital": "Paris"}', []),
    ("Give your answer as JSON: the capital of France.", "Paris", ["json"]),
    ("Write a sentence that uses the word 'cat' exactly twice.", "My cat likes a cat.", []),
    (
        "Write a sentence that uses the word 'cat' exactly twice.",
        "Cats! My cat.",
        ["word_times==2"],
    ),
    ("Use the word 'go' exactly three times.", "go go Go", []),
    ("Without using the letter 'e', describe a cat.", "A cat is soft.", []),
    ("Without using the letter 'e', describe a cat.", "Fur everywhere.", ["no_letter"]),
    ("Don't use the letter 'o' at all.", "Hi!", []),
    ("Write two lines: a title, then a subtitle.", "Title\nSubtitle", []),
    ("Write two lines: a title, then a subtitle.", "Title and subtitle", ["lines==2"]),
    ("List four rivers, one per line, with no numbering.", "Nile\nRhine\nPo\nVolga", []),
    ("List four rivers, one per line, with no numbering.", "Nile, Rhine", ["lines==4"]),
    ("Name three colours separated by commas.", "red, blue, green", []),
    ("Spell the digits 2 to 4 as words, comma-separated.", "two, three, four", []),
    ("Spell the digits 2 to 4 as words, comma-separated.", "two three four", ["csv==3"]),
    (
        'Return a JSON object with key "a", without a code block.',
        '```\n{"a": 1}\n```',
        ["no_code_block"],
    ),
]


def test_a_list_without_a_count_is_not_counted() -> None:
    """A numbered list asked with no number of items gets no item count to keep."""
    checks = instruction_checks("Describe your plan as a numbered list.")
    assert not [c for c in checks if c.name.startswith("list_items")]


@pytest.mark.parametrize(("prompt", "answer", "failed"), CASES)
def test_checks(prompt: str, answer: str, failed: list[str]) -> None:
    assert failed_checks(prompt, answer) == failed


def test_no_checkable_instruction_gives_none() -> None:
    assert failed_checks("Tell me about the moon.", "It orbits the earth.") is None


@pytest.mark.parametrize(
    "prompt",
    ["What does JSON stand for?", "Use the word 'x' exactly many times.", "Use a letter."],
)
def test_mentions_that_are_not_instructions_give_none(prompt: str) -> None:
    assert failed_checks(prompt, "anything") is None


def test_broken_rules_say_what_is_wrong_and_by_how_much() -> None:
    prompt = "Describe the sea in exactly 8 words, without using the letter 'z'."
    assert broken_rules(prompt, "The sea is big and blue.") == [
        "use exactly 8 words (yours: 6 words)"
    ]
    assert broken_rules(prompt, "Eight words about a sea that is blue.") == []
