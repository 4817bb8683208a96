"""Tool items: the tools they offer, the turns before the answer, and the calls that count.

A tool item (``kind: "tool"``) carries what the request carries besides its prompt: ``tools``
(OpenAI function tools whose ``parameters`` are JSON Schemas), an optional ``tool_choice``,
and optional ``messages``, the turns between the prompt and the answer (an assistant's calls,
written ``{"id", "name", "arguments": {...}}``, and the ``tool`` results). Its check::

    {"type": "tool", "aspect": "arguments",
     "calls": [{"name": "get_weather",
                "arguments": {"location": {"match": "text", "value": "Oslo"},
                              "unit": {"match": "exact", "value": "celsius"}}}]}

``calls`` lists acceptable calls; the answer must make exactly ``count`` calls (default 1),
each matching a different one of them. With no ``calls`` the answer must make no call and its
text must mention one of ``answers``. Argument paths are dotted (``shipping.address.city``,
``items.0.sku``). ``aspect`` names what the item tests: ``choose`` (the right tool among
several), ``arguments`` (valid arguments carrying the values asked for), ``no_call`` (tools
offered, none needed) or ``result`` (the turn after a tool result: its value stated, or the
next call). :func:`request_problem` says what is wrong with an item on load: unknown tools,
invalid schemas, inconsistent turns, paths the schema lacks, expected values it would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError

Aspect = Literal["choose", "arguments", "no_call", "result"]


class Function(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A function tool: its name, what it does, and its arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class Tool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: Literal["function"]
    function: Function


class Named(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class NamedChoice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``tool_choice`` naming the one function the answer must call."""

    type: Literal["function"]
    function: Named


ToolChoice = Literal["auto", "none", "required"] | NamedChoice


class Call(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A call an earlier assistant turn made; ``arguments`` is sent as JSON text."""

    id: str
    name: str
    arguments: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": json.dumps(self.arguments)}
        return {"id": self.id, "type": "function", "function": function}


class _Turn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="role"):
    def wire(self) -> dict[str, Any]:
        raise NotImplementedError


class UserTurn(_Turn, frozen=True, tag="user"):
    content: str

    def wire(self) -> dict[str, Any]:
        return {"role": "user", "content": self.content}


class AssistantTurn(_Turn, frozen=True, tag="assistant"):
    content: str | None = None
    tool_calls: tuple[Call, ...] = ()

    def wire(self) -> dict[str, Any]:
        turn: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            turn["tool_calls"] = [call.wire() for call in self.tool_calls]
        return turn


class ToolTurn(_Turn, frozen=True, tag="tool"):
    tool_call_id: str
    content: str

    def wire(self) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.content}


Turn = UserTurn | AssistantTurn | ToolTurn


class _Arg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="match"):
    def examples(self) -> tuple[Any, ...]:
        """Values this constraint accepts that the argument's schema must accept too."""
        return ()


class Exact(_Arg, frozen=True, tag="exact"):
    """The argument equals ``value`` (JSON equality: ``3 == 3.0``, ``true != 1``)."""

    value: Any

    def examples(self) -> tuple[Any, ...]:
        return (self.value,)


class Text(_Arg, frozen=True, tag="text"):
    """The argument is a string that mentions one alias, normalised, as whole words."""

    value: str | tuple[str, ...]

    @property
    def aliases(self) -> tuple[str, ...]:
        return (self.value,) if isinstance(self.value, str) else self.value


class Number(_Arg, frozen=True, tag="number"):
    """The argument is a number within ``tol`` (absolute) of ``value``."""

    value: float
    tol: float = 0.0

    def examples(self) -> tuple[Any, ...]:
        return (self.value,)


class OneOf(_Arg, frozen=True, tag="one_of"):
    """The argument equals one of ``values`` (as :class:`Exact`)."""

    values: tuple[Any, ...]

    def examples(self) -> tuple[Any, ...]:
        return self.values


class Present(_Arg, frozen=True, tag="present"):
    """The argument is there, whatever its value (the schema still judges it)."""


Arg = Exact | Text | Number | OneOf | Present


class ExpectedCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An acceptable call: the tool's name and constraints on arguments, by dotted path."""

    name: str
    arguments: dict[str, Arg] = msgspec.field(default_factory=dict)


class ToolCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="tool"):
    """The answer makes exactly ``count`` calls, each matching a different one of ``calls``
    and valid under its tool's schema; or, with no ``calls``, makes no call and mentions one of
    ``answers``. ``aspect`` says what the item tests (it must agree with the rest)."""

    aspect: Aspect
    calls: tuple[ExpectedCall, ...] = ()
    count: int = 1
    answers: tuple[str, ...] = ()


def validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for ``schema`` (its ``$schema`` draft, else 2020-12) that checks formats."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_at(schema: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    """The sub-schema of the argument at dotted ``path`` (digits step into arrays), if any."""
    here: Mapping[str, Any] = schema
    for part in path.split("."):
        step = here.get("items") if part.isdigit() else here.get("properties", {}).get(part)
        if not isinstance(step, Mapping):
            return None
        here = step
    return here


def first_error(schema: Mapping[str, Any], value: Any) -> str | None:
    """The first reason ``schema`` refuses ``value`` (by path, then message), or None."""
    errors = sorted(validator(schema).iter_errors(value), key=lambda e: (e.json_path, e.message))
    if not errors:
        return None
    where = errors[0].json_path.removeprefix("$").lstrip(".")
    return f"{where}: {errors[0].message}" if where else errors[0].message


def request_problem(
    check: ToolCheck, tools: Sequence[Tool], choice: ToolChoice | None, turns: Sequence[Turn]
) -> str | None:
    """What is wrong with a tool item's request and check, or None when it is sound."""
    schemas = {tool.function.name: tool.function.parameters for tool in tools}
    return (
        _tools_problem(tools, schemas)
        or _choice_problem(choice, schemas)
        or _turns_problem(turns, schemas)
        or _aspect_problem(check, turns)
        or _forcing_problem(check, choice)
        or _expected_problem(check, schemas)
    )


def _tools_problem(tools: Sequence[Tool], schemas: Mapping[str, Any]) -> str | None:
    if not tools:
        return "a tool item offers at least one tool"
    if len(schemas) != len(tools):
        return "two tools share a name"
    for name, schema in schemas.items():
        if schema.get("type") != "object":
            return f"tool {name}: parameters must be an object schema"
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            return f"tool {name}: invalid parameters schema: {exc.message}"
    return None


def _choice_problem(choice: ToolChoice | None, schemas: Mapping[str, Any]) -> str | None:
    if isinstance(choice, NamedChoice) and choice.function.name not in schemas:
        return f"tool_choice names {choice.function.name!r}, which is not offered"
    return None


def _turns_problem(turns: Sequence[Turn], schemas: Mapping[str, Any]) -> str | None:
    called: set[str] = set()
    answered: set[str] = set()
    for turn in turns:
        if isinstance(turn, ToolTurn) and turn.tool_call_id not in called:
            return f"messages: a result for unknown call {turn.tool_call_id!r}"
        if isinstance(turn, ToolTurn):
            answered.add(turn.tool_call_id)
        for call in turn.tool_calls if isinstance(turn, AssistantTurn) else ():
            problem = _call_problem(call, schemas, called)
            if problem:
                return f"messages: {problem}"
            called.add(call.id)
    if called - answered:
        return f"messages: no result for call {sorted(called - answered)[0]!r}"
    if turns and isinstance(turns[-1], AssistantTurn):
        return "messages must end with a tool result or a user turn"
    return None


def _call_problem(call: Call, schemas: Mapping[str, Any], called: set[str]) -> str | None:
    if call.name not in schemas:
        return f"a call to {call.name!r}, which is not offered"
    if call.id in called:
        return f"two calls share the id {call.id!r}"
    error = first_error(schemas[call.name], call.arguments)
    return f"call {call.id!r}: {error}" if error else None


def _aspect_problem(check: ToolCheck, turns: Sequence[Turn]) -> str | None:
    if bool(check.calls) == bool(check.answers):
        return "a tool check has either calls or answers"
    if not 1 <= check.count <= max(1, len(check.calls)):
        return f"count must be between 1 and the {len(check.calls)} calls listed"
    if check.aspect == "result" and not turns:
        return "a result item needs messages with the earlier call and its result"
    if check.aspect != "result" and turns:
        return f"a {check.aspect} item has no messages"
    if check.aspect == "no_call" and check.calls:
        return "a no_call item expects no calls"
    if check.aspect in ("choose", "arguments") and not check.calls:
        return f"a {check.aspect} item expects calls"
    return None


def _forcing_problem(check: ToolCheck, choice: ToolChoice | None) -> str | None:
    forced = choice == "required" or isinstance(choice, NamedChoice)
    if forced and not check.calls:
        return "tool_choice forces a call but the check expects none"
    if choice == "none" and check.calls:
        return "tool_choice is none but the check expects calls"
    if isinstance(choice, NamedChoice) and any(c.name != choice.function.name for c in check.calls):
        return "tool_choice names one tool but the check expects another"
    return None


def _expected_problem(check: ToolCheck, schemas: Mapping[str, Any]) -> str | None:
    for call in check.calls:
        if call.name not in schemas:
            return f"the check expects {call.name!r}, which is not offered"
        for path, arg in call.arguments.items():
            problem = _arg_problem(arg, schema_at(schemas[call.name], path))
            if problem:
                return f"{call.name}.{path}: {problem}"
    return None


def _arg_problem(arg: Arg, schema: Mapping[str, Any] | None) -> str | None:
    if schema is None:
        return "the tool has no such argument"
    errors = (first_error(schema, value) for value in arg.examples())
    return next((error for error in errors if error), None)
