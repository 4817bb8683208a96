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

from backends.errors import InvalidRequest
from ensemble.base import NO_OPTIONS, Options

Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

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
    content: str | list[dict[str, Any]] | None = None
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
    response_format: dict[str, Any] | None = None
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
    if checked.response_format is not None and "type" not in checked.response_format:
        raise InvalidRequest("`response_format` needs a `type`", param="response_format")
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


def _decode_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
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
