"""The JSON shape a prompt asks for, as a JSON Schema the nodes can enforce.

Chat front ends ask small background questions whose answers a program parses: Open WebUI's
titles, tags and follow-ups say ``JSON format: { "tags": ["tag1", "tag2"] }``. A small model
often answers them in prose, and the front end then silently drops the result. When a prompt
shows the object it wants right after saying JSON, that example is turned into a schema (the
same keys, all required, values of the example's types: text, lists of text, numbers,
booleans, nested objects) that the nodes enforce with a grammar, and that the cascade checks.
"""

from __future__ import annotations

import json
import re
from typing import Any

_JSON = re.compile(r"\bjson\b", re.IGNORECASE)
_REACH = 40
"""Characters after the word JSON within which the example object must start."""


def requested_schema(prompt: str) -> dict[str, Any] | None:
    """The schema of the first JSON object example that follows the word "JSON" on its line
    (within a few characters), or None when the prompt shows none."""
    decoder = json.JSONDecoder()
    for match in _JSON.finditer(prompt):
        start = prompt.find("{", match.end(), match.end() + _REACH)
        if start < 0 or "\n" in prompt[match.end() : start]:
            continue
        try:
            example, _ = decoder.raw_decode(prompt, start)
        except ValueError:
            continue
        if isinstance(example, dict) and example:
            return schema_of(example)
    return None


def schema_of(example: Any) -> dict[str, Any]:
    """A JSON Schema that the example and values shaped like it satisfy."""
    if isinstance(example, dict):
        return {
            "type": "object",
            "properties": {key: schema_of(value) for key, value in example.items()},
            "required": list(example),
            "additionalProperties": False,
        }
    if isinstance(example, list):
        items = schema_of(example[0]) if example else {"type": "string"}
        return {"type": "array", "items": items, "minItems": 1}
    if isinstance(example, bool):
        return {"type": "boolean"}
    if isinstance(example, int | float):
        return {"type": "number"}
    return {"type": "string", "minLength": 1}


def with_schema(body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``body`` asking for JSON that matches ``schema`` (OpenAI's ``json_schema`` format)."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    return {**body, "response_format": fmt}
