"""Reference solutions of the code items, and stubs that keep their names and nothing else.

``data/references/code.jsonl`` holds one line per code item, ``{"id": ..., "solution": ...}``.
A reference shows that an item's hidden tests can pass, and a stub that they can fail; both
also judge checks that are not the item's own (the examples a strategy reads from the prompt,
the assertions a member writes): a sound check passes on the reference, a telling one fails on
the stub.
"""

from __future__ import annotations

import ast
import json
from importlib import resources

_CLASS_STUB = """class {name}:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, attribute):
        return lambda *args, **kwargs: None
"""


def load_references() -> dict[str, str]:
    """The reference solution of each code item, by id."""
    data = resources.files("evals").joinpath("data", "references", "code.jsonl")
    rows = [json.loads(line) for line in data.read_text("utf-8").splitlines() if line.strip()]
    return {str(row["id"]): str(row["solution"]) for row in rows}


def stub_of(solution: str) -> str:
    """``solution``'s top-level functions and classes, emptied: each function returns None, and
    each class takes any arguments and answers every attribute with a function returning None."""
    stubs: list[str] = []
    for node in ast.parse(solution).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stubs.append(f"def {node.name}(*args, **kwargs):\n    return None\n")
        elif isinstance(node, ast.ClassDef):
            stubs.append(_CLASS_STUB.format(name=node.name))
    return "\n".join(stubs)
