"""The wire schema of `POST /v1/chat/completions`: validation with field-named errors.

The body is decoded once into a plain dict (kept for forwarding) and checked against
:class:`ChatBody`; any msgspec error becomes :class:`backends.errors.InvalidRequest` whose
``param`` is the JSON path of the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from ensemble.base import NO_OPTIONS, Options
from gateway.errors import InvalidRequest

Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
ContentPart = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="A content part: a string `type`; a `text` part has a string `text`.",
        extra_json_schema={
            "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
            "required": ["type"],
            "if": {"properties": {"type": {"const": "text"}}},
            "then": {"required": ["text"]},
        },
    ),
]
ResponseFormat = Annotated[
    dict[str, Any],
    msgspec.Meta(
        extra_json_schema={
            "required": ["type"],
            "properties": {
                "type": {"type": "string"},
                "json_schema": {
                    "type": ["object", "null"],
                    "properties": {"schema": {"type": "object"}},
                },
            },
        }
    ),
]

FORWARDED = (
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "tools",
    "tool_choice",
    "response_format",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "parallel_tool_calls",
    # llama.cpp sampling extensions, understood by both server kinds
    "top_k",
    "min_p",
    "repeat_penalty",
    "typical_p",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
)

_PATH = re.compile(r"at `\$\.?([^`]*)`")


class Message(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class Function(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(msgspec.Struct):
    type: Literal["function"]
    function: Function


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatBody(msgspec.Struct):
    """The fields the gateway checks; others pass through or are ignored."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Unit | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    seed: int | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None


class ParsedChat(msgspec.Struct, frozen=True):
    """A validated request: the checked view, the body to forward, the ``booagent`` options."""

    checked: ChatBody
    forward: dict[str, Any]
    options: Options = NO_OPTIONS

    @property
    def include_usage(self) -> bool:
        options = self.checked.stream_options
        return bool(options and options.include_usage)


def parse_chat(raw: bytes, members: Sequence[str] = ()) -> ParsedChat:
    """Decode and validate a chat request body, or raise InvalidRequest naming the field.

    ``members`` are the valid names for ``booagent.members``.
    """
    body = _decode_object(raw)
    try:
        checked = msgspec.convert(body, ChatBody)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from exc
    if checked.response_format is not None:
        _check_response_format(checked.response_format)
    _check_tool_schemas(checked.tools or [])
    _check_parts(checked.messages)
    options = _options(body.get("booagent"), members)
    return ParsedChat(checked=checked, forward=_forward(body, checked), options=options)


def _options(raw: Any, members: Sequence[str]) -> Options:
    """The ``booagent`` object; unknown keys, bad values and unknown members are named."""
    if raw is None:
        return NO_OPTIONS
    try:
        options = msgspec.convert(raw, Options)
    except msgspec.ValidationError as exc:
        error = _invalid(str(exc))
        param = f"booagent.{error.param}" if error.param else "booagent"
        raise InvalidRequest(
            error.message.replace("request field", "`booagent` field"), param=param
        ) from exc
    unknown = [m for m in options.members or () if m not in members]
    if unknown:
        raise InvalidRequest(
            f"`booagent.members` names unknown members: {', '.join(unknown)}",
            param="booagent.members",
        )
    return options


def _check_response_format(fmt: dict[str, Any]) -> None:
    """A string ``type``; a ``json_schema``, when given, is an object whose ``schema`` is one
    (the cascade checks answers against it)."""
    if "type" not in fmt:
        raise InvalidRequest("`response_format` needs a `type`", param="response_format")
    if not isinstance(fmt["type"], str):
        raise InvalidRequest(
            "`response_format.type` must be a string", param="response_format.type"
        )
    spec = fmt.get("json_schema")
    if spec is not None and not isinstance(spec, dict):
        param = "response_format.json_schema"
        raise InvalidRequest(f"`{param}` must be an object", param=param)
    if spec is not None and not isinstance(spec.get("schema", {}), dict):
        param = "response_format.json_schema.schema"
        raise InvalidRequest(f"`{param}` must be an object", param=param)
    for where, schema in (
        ("json_schema.schema", (spec or {}).get("schema")),
        ("schema", fmt.get("schema")),
    ):
        if isinstance(schema, dict):
            _check_schema(schema, f"response_format.{where}")


def _check_tool_schemas(tools: Sequence[Tool]) -> None:
    """Each tool's ``parameters`` is a JSON Schema: the nodes turn it into a grammar to force a
    call, and a schema that is not one could stop a node (llama_cpp.server exits on a grammar
    it cannot parse)."""
    for i, tool in enumerate(tools):
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools[{i}].function.parameters")


def _check_schema(schema: dict[str, Any], param: str) -> None:
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at `{where}`" if where else ""
        raise InvalidRequest(
            f"`{param}` is not a valid JSON Schema{at}: {exc.message[:200]}", param=param
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest(f"`{param}` is nested too deeply", param=param) from exc


def _check_parts(messages: Sequence[Message]) -> None:
    """Every content part names its ``type``, and its ``text`` (which a ``text`` part needs)
    is a string: the classifier and the nodes read it as text."""
    for i, message in enumerate(messages):
        for j, part in enumerate(message.content if isinstance(message.content, list) else ()):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(part.get("type"), str):
                raise InvalidRequest(f"`{where}.type` must be a string", param=f"{where}.type")
            if ("text" in part or part["type"] == "text") and not isinstance(part.get("text"), str):
                raise InvalidRequest(f"`{where}.text` must be a string", param=f"{where}.text")


def _decode_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest("the request body is not valid UTF-8") from exc
    except RecursionError as exc:
        raise InvalidRequest("the request body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _invalid(message: str) -> InvalidRequest:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.seed`' into a named-field error."""
    match = _PATH.search(message)
    param = match.group(1) if match else None
    if param is None and message.startswith("Object missing required field"):
        param = message.split("`")[1]
    text = _PATH.sub("", message).rstrip(" -")
    where = f"`{param}`: " if param else ""
    return InvalidRequest(f"invalid request field {where}{text}", param=param)


def _forward(body: dict[str, Any], checked: ChatBody) -> dict[str, Any]:
    forward = {key: body[key] for key in FORWARDED if body.get(key) is not None}
    if checked.max_completion_tokens is not None and checked.max_tokens is None:
        forward["max_tokens"] = checked.max_completion_tokens
    return forward
