"""Tool-call arguments against their schemas: validation, and schemas that force a call.

:func:`argument_errors` checks a call's arguments with ``jsonschema`` (the draft named by the
schema's ``$schema``, Draft 2020-12 when it names none) and says what is wrong in short
sentences a model can be shown in a re-ask. :func:`call_schema` builds the JSON schema of
``{"name": <tool>, "arguments": <its parameters>}`` (one tool, any of several, or a non-empty
array of them) for nodes that take a schema but cannot force a call themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError

from backends.toolcalls import Call, Tool

MAX_ERRORS = 10
"""At most this many errors are reported for one call."""
_MAX_MESSAGE = 200


def argument_errors(arguments: str, schema: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``arguments`` (JSON text) under ``schema``; empty when valid.

    Invalid JSON, a value that is not an object, and an invalid schema are errors too. Each
    message names where (``arguments``, ``arguments.city``, ``arguments.items[0]``) and
    what, in one short sentence; at most :data:`MAX_ERRORS`, in document order.
    """
    try:
        value = json.loads(arguments, parse_constant=_reject_constant)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return [f"arguments are not valid JSON: {reason}"]
    if not isinstance(value, dict):
        return [f"arguments must be a JSON object, not {_json_type(value)}"]
    plain = dict(schema)
    validator_class = jsonschema.validators.validator_for(
        plain, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(plain)
    except SchemaError as exc:
        return [_shorten(f"the tool's parameters schema is invalid: {exc.message}")]
    errors = sorted(validator_class(plain).iter_errors(value), key=_error_order)
    return [_describe(error) for error in errors[:MAX_ERRORS]]


def call_errors(call: Call, tools: Sequence[Tool]) -> list[str]:
    """What is wrong with ``call``: an unknown tool, or :func:`argument_errors`."""
    tool = next((tool for tool in tools if tool.name == call.name), None)
    if tool is None:
        known = ", ".join(tool.name for tool in tools)
        return [f"there is no tool named {call.name!r}; the tools are: {known}"]
    return argument_errors(call.arguments, tool.parameters)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _error_order(error: ValidationError) -> tuple[str, str]:
    return (error.json_path, error.message)


def _describe(error: ValidationError) -> str:
    where = "arguments" + error.json_path.removeprefix("$")
    return _shorten(f"{where}: {error.message}")


def _shorten(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def call_schema(
    tools: Sequence[Tool], *, only: str | None = None, parallel: bool = False
) -> dict[str, Any]:
    """The JSON schema of a call to ``only`` (or to any of ``tools``), or of a non-empty
    array of such calls when ``parallel``.

    A call is ``{"name": <const>, "arguments": <the tool's parameters>}`` with no other keys,
    ``name`` first (llama.cpp's grammars emit properties in order). Each tool's parameters
    move under ``$defs/tool<i>`` with their local ``$ref`` pointers rebased, so tools with
    their own ``$defs`` keep working. Raises ``ValueError`` when no tool matches.
    """
    chosen = [tool for tool in tools if only is None or tool.name == only]
    if not chosen:
        raise ValueError(f"no tool named {only!r}" if only else "no tools")
    defs: dict[str, Any] = {}
    alternatives = []
    for position, tool in enumerate(chosen):
        key = f"tool{position}"
        defs[key] = _rebased(tool.parameters, f"#/$defs/{key}")
        alternatives.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    "arguments": {"$ref": f"#/$defs/{key}"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    one = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    if parallel:
        return {"$defs": defs, "type": "array", "items": one, "minItems": 1}
    return {"$defs": defs, **one}


def _rebased(schema: Any, base: str) -> Any:
    """``schema`` with every local ``$ref`` (``#`` or ``#/...``) moved under ``base``."""
    if isinstance(schema, list):
        return [_rebased(item, base) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: _rebased(value, base) for key, value in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
        out["$ref"] = base + ref[1:]
    out.pop("$schema", None)
    return out
