"""Tests for gateway.schema: chat request validation with field-named errors, and forwarding."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble.classify import Kind, classify
from gateway.errors import InvalidRequest
from gateway.schema import FORWARDED, parse_chat

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
NOT_FORWARDED = {"model", "stream", "stream_options", "n", "user", "max_completion_tokens"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def other_than(*allowed: type) -> st.SearchStrategy[Any]:
    """JSON values whose exact type is none of ``allowed`` (so ``True`` is not an int)."""
    return json_values.filter(lambda value: type(value) not in allowed)


def numbers_outside(low: float, high: float) -> st.SearchStrategy[Any]:
    return st.floats(max_value=low, exclude_max=True) | st.floats(min_value=high, exclude_min=True)


def wrong_float(low: float, high: float) -> st.SearchStrategy[Any]:
    return numbers_outside(low, high).filter(lambda v: v == v and abs(v) != float("inf")) | (
        other_than(int, float, type(None))
    )


def wrong_int(low: int, high: int | None = None) -> st.SearchStrategy[Any]:
    out_of_range = st.integers(max_value=low - 1)
    if high is not None:
        out_of_range |= st.integers(min_value=high + 1, max_value=2**63 - 1)
    return out_of_range | other_than(int, type(None))


nonempty_text = st.text(min_size=1, max_size=10)
tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=64)}),
    }
)

WRONG: dict[str, st.SearchStrategy[Any]] = {
    "model": json_values.filter(lambda v: not (isinstance(v, str) and v)),
    "messages": other_than(list)
    | st.just([])
    | st.lists(other_than(dict), min_size=1, max_size=3)
    | st.lists(
        st.fixed_dictionaries(
            {
                "role": nonempty_text.filter(
                    lambda r: (
                        r not in {"system", "developer", "user", "assistant", "tool", "function"}
                    )
                )
            }
        ),
        min_size=1,
        max_size=2,
    ),
    "stream": other_than(bool),
    "stream_options": other_than(dict, type(None))
    | st.fixed_dictionaries({"include_usage": other_than(bool)}),
    "temperature": wrong_float(0, 2),
    "top_p": wrong_float(0, 1),
    "max_tokens": wrong_int(1),
    "max_completion_tokens": wrong_int(1),
    "stop": other_than(str, list, type(None))
    | st.lists(st.text(max_size=3), min_size=5, max_size=8)
    | st.lists(other_than(str), min_size=1, max_size=3),
    "seed": other_than(int, type(None)),
    "n": wrong_int(1, 1),
    "tools": other_than(list, type(None))
    | st.lists(other_than(dict), min_size=1, max_size=2)
    | st.just([{"type": "function"}])
    | st.just([{"type": "retrieval", "function": {"name": "f"}}])
    | st.sampled_from(["", "x" * 65]).map(
        lambda n: [{"type": "function", "function": {"name": n}}]
    ),
    "tool_choice": other_than(str, dict, type(None)),
    "response_format": other_than(dict, type(None))
    | st.dictionaries(st.text(max_size=5).filter(lambda k: k != "type"), json_values, max_size=3),
    "logprobs": other_than(bool, type(None)),
    "top_logprobs": wrong_int(0, 20),
    "presence_penalty": wrong_float(-2, 2),
    "frequency_penalty": wrong_float(-2, 2),
    "user": other_than(str, type(None)),
}

VALID: dict[str, st.SearchStrategy[Any]] = {
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 100_000),
    "max_completion_tokens": st.integers(1, 100_000),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=4),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "n": st.just(1),
    "tools": st.lists(tool, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"])
    | st.just({"type": "function", "function": {"name": "f"}}),
    "response_format": st.just({"type": "json_object"}),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "user": st.text(max_size=10),
    "top_k": st.integers(0, 100),
    "min_p": st.floats(0, 1),
    "metadata": json_values,
    "unknown_extension": json_values,
}


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def rejected(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(encode(body) if not isinstance(body, bytes) else body)
    return caught.value


class TestValid:
    def test_minimal_request(self) -> None:
        """Model and messages are enough; defaults fill the rest."""
        parsed = parse_chat(encode(BASE))
        assert parsed.checked.model == "m"
        assert parsed.checked.stream is False
        assert not parsed.include_usage
        assert parsed.forward == {"messages": BASE["messages"]}

    def test_include_usage_is_read_from_stream_options(self) -> None:
        """``stream_options.include_usage`` asks for a usage chunk."""
        body = {**BASE, "stream": True, "stream_options": {"include_usage": True}}
        assert parse_chat(encode(body)).include_usage

    def test_max_completion_tokens_becomes_max_tokens(self) -> None:
        """Nodes know only ``max_tokens``; the newer name is mapped onto it."""
        parsed = parse_chat(encode({**BASE, "max_completion_tokens": 64}))
        assert parsed.forward["max_tokens"] == 64
        assert "max_completion_tokens" not in parsed.forward

    def test_explicit_max_tokens_wins(self) -> None:
        """When both are sent, ``max_tokens`` is kept as it is."""
        parsed = parse_chat(encode({**BASE, "max_tokens": 10, "max_completion_tokens": 64}))
        assert parsed.forward["max_tokens"] == 10

    def test_messages_are_forwarded_verbatim(self) -> None:
        """Message fields the gateway does not check (e.g. images) reach the node untouched."""
        content = [{"type": "image_url", "image_url": {"url": "data:,"}, "detail": "low"}]
        messages = [{"role": "user", "content": content, "extra": 1}]
        assert parse_chat(encode({**BASE, "messages": messages})).forward["messages"] == messages

    @given(
        st.dictionaries(st.sampled_from(sorted(VALID)), st.none()).flatmap(
            lambda keys: st.fixed_dictionaries({k: VALID[k] for k in keys})
        )
    )
    def test_only_forwarded_fields_are_forwarded(self, extra: dict[str, Any]) -> None:
        """Valid bodies forward exactly their non-null FORWARDED fields, values unchanged."""
        body = {**BASE, **extra}
        forward = parse_chat(encode(body)).forward
        expected = {k: v for k, v in body.items() if k in FORWARDED and v is not None}
        if "max_completion_tokens" in body and "max_tokens" not in body:
            expected["max_tokens"] = body["max_completion_tokens"]
        assert forward == expected
        assert not NOT_FORWARDED & set(forward)


class TestInvalid:
    @pytest.mark.parametrize("field", sorted(WRONG))
    @settings(max_examples=40)
    @given(data=st.data())
    def test_wrong_value_names_its_field(self, field: str, data: st.DataObject) -> None:
        """A wrongly typed or out-of-range value is rejected with ``param`` naming the field."""
        value = data.draw(WRONG[field], label=field)
        error = rejected({**BASE, field: value})
        assert error.param is not None
        assert error.param == field or error.param.startswith((f"{field}.", f"{field}["))
        assert error.status_code == 400
        assert field in error.message

    @pytest.mark.parametrize("field", ["model", "messages"])
    def test_missing_required_field_is_named(self, field: str) -> None:
        """Leaving out a required field names it."""
        body = {k: v for k, v in BASE.items() if k != field}
        assert rejected(body).param == field

    @pytest.mark.parametrize(
        "raw", [b"", b"   ", b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b"{'a': 1}"]
    )
    def test_bodies_that_are_not_objects(self, raw: bytes) -> None:
        """Empty, malformed or non-object bodies are rejected without a param."""
        assert rejected(raw).param is None

    @pytest.mark.parametrize("field", ["messages", "tools", "response_format", "metadata", "x"])
    def test_deeply_nested_bodies_are_rejected_cleanly(self, field: str) -> None:
        """Nesting deeper than the decoder can follow is a client error, not a crash."""
        depth = 5000
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        raw = encode(BASE)[:-1] + f', "{field}": '.encode() + nested + b"}"
        assert rejected(raw).status_code == 400

    @pytest.mark.parametrize("depth", [10, 500, 1500, 5000])
    def test_nesting_inside_message_content_is_accepted_or_named(self, depth: int) -> None:
        """Nesting in a content part's extra field is kept up to the decoder's depth limit
        (about a thousand levels) and past it is a 400 that says so, never a crash."""
        part = b'{"type": "text", "text": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
        raw = b'{"model": "m", "messages": [{"role": "user", "content": [' + part + b"]}]}"
        if depth < 1000:
            assert parse_chat(raw).checked.messages[0].content is not None
        else:
            error = rejected(raw)
            assert error.message == "the request body is nested too deeply"

    def test_large_unicode_body_is_accepted(self) -> None:
        """A big prompt in many scripts is valid; size limits are the server's business."""
        text = "héllo wörld 你好 🌊 مرحبا " * 40_000
        parsed = parse_chat(encode({**BASE, "messages": [{"role": "user", "content": text}]}))
        assert parsed.forward["messages"][0]["content"] == text

    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_crash(self, raw: bytes) -> None:
        """Any byte string is either a valid request or InvalidRequest."""
        with contextlib.suppress(InvalidRequest):
            parse_chat(raw)

    @given(
        st.dictionaries(
            st.sampled_from([*WRONG, "top_k", "metadata"]) | st.text(max_size=10),
            json_values | st.text(st.characters(codec="utf-8"), max_size=50),
            max_size=8,
        )
    )
    def test_arbitrary_objects_never_crash(self, body: dict[str, Any]) -> None:
        """Any JSON object, however odd its keys and values, is accepted or InvalidRequest."""
        try:
            parsed = parse_chat(encode(body))
        except InvalidRequest:
            return
        assert set(parsed.forward) <= set(FORWARDED)


INT_FIELDS = ["n", "top_logprobs", "max_tokens", "max_completion_tokens"]
plain_text = st.text(
    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters='"\\'), max_size=40
)
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf5\x80\x80\x80"]
content_parts = st.lists(
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "x"]), json_values, max_size=3)
    | st.fixed_dictionaries({"type": st.just("text"), "text": json_values}),
    max_size=4,
)


class TestHostileInput:
    @given(plain_text, st.sampled_from(INVALID_UTF8), st.data())
    def test_invalid_utf8_anywhere_in_a_string_is_rejected(
        self, text: str, bad: bytes, data: st.DataObject
    ) -> None:
        """Invalid UTF-8 spliced into a string value is InvalidRequest, never a decode crash."""
        body = {**BASE, "messages": [{"role": "user", "content": text}]}
        raw = json.dumps(body, ensure_ascii=False).encode()
        start = raw.index(b'"content": "') + len(b'"content": "')
        at = data.draw(st.integers(start, raw.index(b'"}]', start)), label="at")
        error = rejected(raw[:at] + bad + raw[at:])
        assert error.param is None and "UTF-8" in error.message

    @given(st.lists(st.text(st.characters(codec="utf-8"), max_size=30), min_size=1, max_size=4))
    def test_any_unicode_is_forwarded_unchanged(self, texts: list[str]) -> None:
        """Any text, escaped or raw UTF-8, reaches the node exactly as sent."""
        messages = [{"role": "user", "content": t} for t in texts]
        for ensure_ascii in (True, False):
            raw = json.dumps({**BASE, "messages": messages}, ensure_ascii=ensure_ascii).encode()
            assert parse_chat(raw).forward["messages"] == messages

    @pytest.mark.parametrize("field", ["n", "top_logprobs"])
    @given(st.integers(min_value=2**64) | st.integers(max_value=-(2**64)))
    def test_integers_beyond_64_bits_name_their_field(self, field: str, value: int) -> None:
        """A bounded integer field given a number wider than 64 bits names the field."""
        assert rejected({**BASE, field: value}).param == field

    @pytest.mark.parametrize("field", INT_FIELDS)
    def test_a_decimal_where_an_integer_is_due_names_the_field(self, field: str) -> None:
        """``1.0`` is not an integer on the wire (as with OpenAI): the field is named."""
        assert rejected({**BASE, field: 1.0}).param == field

    @given(content_parts)
    def test_every_accepted_body_can_be_classified(self, parts: list[dict[str, Any]]) -> None:
        """Whatever content parts a user message holds, the body is rejected naming a part,
        or accepted and safe for the classifier (which once crashed on a non-string text)."""
        body = {**BASE, "messages": [{"role": "user", "content": parts}]}
        try:
            parsed = parse_chat(encode(body))
        except InvalidRequest as error:
            assert error.param is not None and error.param.startswith("messages[0].content[")
            return
        assert classify(parsed.forward) in set(Kind)


class TestSchemas:
    """Schemas the nodes turn into grammars must be JSON Schemas (llama_cpp.server exits on a
    grammar it cannot parse, so a bad one is refused here, named)."""

    def test_a_tool_whose_parameters_are_no_schema_is_named(self) -> None:
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}
        error = rejected({**BASE, "tools": [tool]})
        assert error.param == "tools[0].function.parameters"
        assert "not a valid JSON Schema" in error.message

    def test_a_response_format_schema_that_is_none_is_named(self) -> None:
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"required": 1}}}
        error = rejected({**BASE, "response_format": fmt})
        assert error.param == "response_format.json_schema.schema"

    def test_valid_schemas_pass(self) -> None:
        parameters = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
        tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
        fmt = {"type": "json_object", "schema": {"type": "object"}}
        parsed = parse_chat(encode({**BASE, "tools": [tool], "response_format": fmt}))
        assert parsed.forward["tools"] == [tool]
