"""Raw requests the schema-based fuzzer cannot produce: broken bytes, odd JSON, odd headers.

Each case goes through the whole app in process (over fake nodes) and must get a non-5xx answer;
every error is the OpenAI body. Cases that were findings say so in their docstring.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backends.config import Member
from gateway.app import create_app
from gateway.settings import ConfigError, load_settings
from tests.fakes import FakeNode, fake_pool, settings_for

pytestmark = pytest.mark.anyio

HUGE = 100_000_000
"""A context no fuzzed prompt outgrows: these tests are about parsing, not fitting."""
M1 = Member(name="m1", n_ctx=HUGE)
KEY = "sk-raw"
CHAT = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
HEAD = b'{"model": "booagent-cluster", "messages": [{"role": "user", "content": "hi"}]'


def with_field(name: str, raw_value: bytes) -> bytes:
    """A valid body with one more field, its value given as raw JSON text."""
    return HEAD + b', "' + name.encode() + b'": ' + raw_value + b"}"


def chat_app(**server: Any) -> tuple[Any, FakeNode]:
    node = FakeNode("a", reply="fine")
    config = settings_for([M1], [("a", "m1")], server={"log_level": "warning", **server})
    pool = fake_pool([(node, M1)])
    return create_app(config, pool_factory=lambda _: pool), node


def assert_openai_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    """The body is the OpenAI error; ``param`` names the field or an item of it."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param or error["param"].startswith(f"{param}[")
    return error


async def post(raw: bytes, headers: Any = None, **server: Any) -> Any:
    app, _ = chat_app(**server)
    async with AsyncTestClient(app) as client:
        return await client.post(CHAT, content=raw, headers=JSON if headers is None else headers)


class TestBrokenBodies:
    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(HEAD.replace(b"hi", b"h\xffi") + b"}", id="bad-byte-in-string"),
            pytest.param(HEAD.replace(b"hi", b"\xc3") + b"}", id="truncated-sequence"),
            pytest.param(HEAD.replace(b"hi", b"\xed\xa0\x80") + b"}", id="encoded-surrogate"),
            pytest.param(HEAD.replace(b"hi", b"\xf8\x88\x80\x80\x80") + b"}", id="five-bytes"),
        ],
    )
    async def test_invalid_utf8_inside_a_string_is_400(self, raw: bytes) -> None:
        """Finding: invalid UTF-8 inside a JSON string escaped msgspec as UnicodeDecodeError
        and became a 500; it is a 400 now."""
        error = assert_openai_error(await post(raw), 400)
        assert "UTF-8" in error["message"]

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b" \r\n\t", id="whitespace"),
            pytest.param(b"\xef\xbb\xbf" + HEAD + b"}", id="byte-order-mark"),
            pytest.param(b"model=booagent-cluster&messages=hi", id="form-encoded"),
            pytest.param(HEAD, id="truncated"),
            pytest.param(HEAD + b"}}", id="trailing-garbage"),
            pytest.param(with_field("temperature", b"NaN"), id="nan"),
            pytest.param(with_field("temperature", b"Infinity"), id="infinity"),
            pytest.param(with_field("temperature", b"-Infinity"), id="minus-infinity"),
            pytest.param(with_field("temperature", b"1e400"), id="float-overflow"),
            pytest.param(with_field("seed", b"0x10"), id="hex-literal"),
            pytest.param(with_field("seed", b"01"), id="leading-zero"),
            pytest.param(HEAD.replace(b"hi", b"\\ud800") + b"}", id="lone-surrogate-escape"),
            pytest.param(HEAD.replace(b"hi", b"a\nb") + b"}", id="raw-newline-in-string"),
            pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-arrays-100k"),
            pytest.param(with_field("x", b'{"a":' * 100_000 + b"1" + b"}" * 100_000), id="deep"),
        ],
    )
    async def test_malformed_json_is_400_without_param(self, raw: bytes) -> None:
        """Bytes that are not one JSON object are a 400 naming no field."""
        assert_openai_error(await post(raw), 400)

    @pytest.mark.parametrize("raw", [b"42", b'"text"', b"null", b"true", b"[]", b"-0.0"])
    async def test_json_scalars_and_arrays_are_400(self, raw: bytes) -> None:
        """A body that is valid JSON but not an object is a 400."""
        error = assert_openai_error(await post(raw), 400)
        assert "object" in error["message"]

    @pytest.mark.parametrize(
        ("field", "raw_value"),
        [
            ("top_logprobs", b"123456789012345678901234567890"),
            ("n", b"-123456789012345678901234567890"),
            ("max_tokens", b"1.0"),
            ("stop", b"[" + b",".join([b'"x"'] * 100_000) + b"]"),
            ("stream", b'"true"'),
            ("messages", b"[" + b",".join([b"1"] * 100_000) + b"]"),
        ],
    )
    async def test_wrong_values_name_their_field(self, field: str, raw_value: bytes) -> None:
        """Out-of-range huge numbers, decimals for integers, 100k-element arrays past a limit
        and wrong types are 400s naming the field."""
        error = assert_openai_error(await post(with_field(field, raw_value)), 400, param=field)
        assert error["code"] == "invalid_request"

    @pytest.mark.parametrize(
        ("part", "param"),
        [
            ({"type": "text", "text": 5}, "messages[0].content[0].text"),
            ({"type": "text"}, "messages[0].content[0].text"),
            ({"type": "image_url", "text": ["x"]}, "messages[0].content[0].text"),
            ({"text": "no type"}, "messages[0].content[0].type"),
            ({"type": None, "image_url": {"url": "data:,"}}, "messages[0].content[0].type"),
        ],
    )
    async def test_malformed_content_parts_name_their_field(
        self, part: dict[str, Any], param: str
    ) -> None:
        """Finding: a content part with a non-string ``text`` crashed the classifier (500
        from ``booagent-cluster:auto`` and every route); it is a 400 naming the field now."""
        body = {"model": "booagent-cluster:auto", "messages": [{"role": "user", "content": [part]}]}
        assert_openai_error(await post(json.dumps(body).encode()), 400, param=param)


class TestOddButValidBodies:
    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            "application/json; charset=latin-1",
        ],
    )
    async def test_content_type_is_not_consulted(self, content_type: str) -> None:
        """A JSON body is read as JSON whatever the content type says (``curl -d`` sends
        form encoding), and answered."""
        response = await post(HEAD + b"}", headers={"content-type": content_type})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "fine"

    async def test_duplicate_keys_keep_the_last(self) -> None:
        """With a key repeated, the last value wins (as in Python's and JavaScript's JSON)."""
        raw = b'{"model": "nope", ' + HEAD[1:] + b"}"
        response = await post(raw)
        assert response.status_code == 200
        assert response.json()["model"] == "booagent-cluster"

    async def test_hundred_thousand_messages_are_answered(self) -> None:
        """A 100k-message conversation under the body limit is valid and reaches the node."""
        messages = [{"role": "user", "content": "hi"}] * 100_000
        app, node = chat_app()
        body = json.dumps({"model": "booagent-cluster", "messages": messages}).encode()
        async with AsyncTestClient(app) as client:
            response = await client.post(CHAT, content=body, headers=JSON)
        assert response.status_code == 200
        assert len(node.requests[0].body["messages"]) == 100_000

    async def test_unicode_heavy_prompt_is_forwarded_unchanged(self) -> None:
        """NUL, astral, right-to-left, combining and zero-width characters reach the node as
        sent, whether escaped or raw UTF-8."""
        text = (
            "\x00 \U0001f30a\U0001d573 \u0645\u0631\u062d\u0628\u0627 "
            "\u0301e\u200b\u202e \u4f60\u597d \U0010fffd"
        ) * 1000
        app, node = chat_app()
        async with AsyncTestClient(app) as client:
            for ensure_ascii in (True, False):
                body = {"model": "m1", "messages": [{"role": "user", "content": text}]}
                raw = json.dumps(body, ensure_ascii=ensure_ascii).encode()
                assert (await client.post(CHAT, content=raw, headers=JSON)).status_code == 200
        assert [r.body["messages"][0]["content"] for r in node.requests] == [text, text]

    async def test_numbers_beyond_64_bits_pass_where_unbounded(self) -> None:
        """An unbounded integer field keeps a huge value exactly (the node decides)."""
        app, node = chat_app()
        async with AsyncTestClient(app) as client:
            raw = with_field("seed", b"123456789012345678901234567890")
            assert (await client.post(CHAT, content=raw, headers=JSON)).status_code == 200
        assert node.requests[0].body["seed"] == 123456789012345678901234567890

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param("\n" * 200_000 + "x", id="newlines"),
            pytest.param(" \n" * 200_000 + "x", id="blank-lines"),
            pytest.param("a" * 400_000 + "(", id="long-word-then-paren"),
            pytest.param("a(" * 200_000, id="calls-without-close"),
            pytest.param("f(x)" + " " * 400_000 + "y", id="call-then-spaces"),
            pytest.param("exactly " * 400_000, id="keyword-runs"),
        ],
    )
    async def test_prompts_shaped_against_the_classifier_are_answered_quickly(
        self, content: str
    ) -> None:
        """Finding: the classifier's code-line regex was quadratic (40 KB of newlines held
        the event loop for 34 s); it is linear now, and reads a bounded window of the prompt."""
        body = {"model": "booagent-cluster", "messages": [{"role": "user", "content": content}]}
        started = time.perf_counter()
        response = await post(json.dumps(body).encode())
        assert response.status_code == 200
        assert time.perf_counter() - started < 2.0


class TestOddHeaders:
    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(f"Bearer {KEY}é".encode(), id="key-then-utf8"),
            pytest.param(f"Bearer {KEY}\xfc".encode("latin-1"), id="key-then-latin1"),
            pytest.param("Bearer ключ".encode(), id="cyrillic"),
            pytest.param(b"Bearer \xff\xfe\x00", id="binary"),
            pytest.param("Bearer 🔑".encode(), id="emoji"),
            pytest.param(b"Bearer", id="no-token"),
            pytest.param(b"Bearer    ", id="blank-token"),
            pytest.param(b"Basic " + KEY.encode(), id="other-scheme"),
            pytest.param(KEY.encode(), id="no-scheme"),
            pytest.param(b"Bearer " + b"k" * 16_000, id="16k-token"),
        ],
    )
    async def test_odd_authorization_is_401(self, authorization: bytes) -> None:
        """Whatever bytes the Authorization header holds, a wrong key is an OpenAI-shaped 401."""
        headers = [(b"content-type", b"application/json"), (b"authorization", authorization)]
        response = await post(HEAD + b"}", headers=headers, api_keys=[KEY])
        assert assert_openai_error(response, 401)["code"] == "invalid_api_key"

    @pytest.mark.parametrize(
        "authorization", [f"Bearer {KEY}", f"bearer {KEY}  ", f"Bearer  {KEY}"]
    )
    async def test_the_key_is_accepted_with_loose_spacing_and_case(
        self, authorization: str
    ) -> None:
        """The scheme is case-insensitive and spaces around the key do not matter."""
        headers = {"content-type": "application/json", "authorization": authorization}
        assert (await post(HEAD + b"}", headers=headers, api_keys=[KEY])).status_code == 200

    @pytest.mark.parametrize(
        "request_id", ["é".encode(), b"\xff", b"a" * 129, b"a b", b"", b"x\x7f"]
    )
    async def test_odd_request_ids_are_replaced(self, request_id: bytes) -> None:
        """An ``x-request-id`` outside ``[A-Za-z0-9._:-]{1,128}`` is replaced by our own."""
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id)]
        response = await post(HEAD + b"}", headers=headers)
        assert response.status_code == 200
        assert response.headers["x-request-id"].startswith("req_")

    @pytest.mark.parametrize("key", ["clé", "two words", "tab\tkey", "ключ"])
    def test_keys_that_cannot_be_sent_are_refused_at_startup(self, key: str) -> None:
        """Finding: a non-ASCII key could never match (header bytes arrive as latin-1), so
        it locked every client out; such keys are a config error now, which never shows them."""
        with pytest.raises(ConfigError) as caught:
            load_settings(environ={"BOOAGENT_API_KEYS": key})
        assert "api_keys[0]" in caught.value.message
        assert key not in caught.value.message


class TestMethodsAndDocument:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [("GET", CHAT, "POST"), ("DELETE", "/v1/models", "GET"), ("TRACE", "/health", "GET")],
    )
    async def test_wrong_method_is_405_with_allow(
        self, method: str, path: str, allowed: str
    ) -> None:
        """Finding: a 405 lacked the ``Allow`` header RFC 9110 requires; it lists the
        endpoint's methods now, under the OpenAI body."""
        app, _ = chat_app()
        async with AsyncTestClient(app) as client:
            response = await client.request(method, path)
        assert assert_openai_error(response, 405)["code"] == "method_not_allowed"
        assert allowed in response.headers["allow"]

    async def test_document_needs_the_key_when_keys_are_on(self) -> None:
        """``/openapi.json`` names the models, so it is behind the key like ``/v1/models``."""
        app, _ = chat_app(api_keys=[KEY])
        async with AsyncTestClient(app) as client:
            refused = await client.get("/openapi.json")
            served = await client.get("/openapi.json", headers={"authorization": f"Bearer {KEY}"})
        assert_openai_error(refused, 401)
        assert served.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


class TestCascadeInputs:
    """The cascade reads schemas and instructions from the request to judge answers."""

    @staticmethod
    def cascade_app(reply: str) -> Any:
        m2 = Member(name="m2", n_ctx=HUGE)
        nodes = [(FakeNode("a", reply=reply), M1), (FakeNode("b", reply=reply), m2)]
        config = settings_for([M1, m2], [("a", "m1"), ("b", "m2")], server={"log_level": "warning"})
        pool = fake_pool(nodes)
        return create_app(config, pool_factory=lambda _: pool)

    @pytest.mark.parametrize(
        "schema", [{"properties": {"a": 5}}, {"required": 5}, {"required": [["a"]]}]
    )
    async def test_malformed_inner_schemas_are_refused_by_name(
        self, schema: dict[str, Any]
    ) -> None:
        """Finding: a JSON schema whose parts were not objects or lists crashed the cascade's
        JSON check (500). Such a schema is no JSON Schema, and a node given it as a grammar
        could exit: it is a 400 naming it now."""
        body = {
            "model": "booagent-cluster:cascade",
            "messages": [{"role": "user", "content": "give json"}],
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        }
        async with AsyncTestClient(self.cascade_app('{"a": 1}')) as client:
            response = await client.post(CHAT, json=body)
        assert_openai_error(response, 400, "response_format.json_schema.schema")

    async def test_an_unusual_but_valid_schema_is_judged(self) -> None:
        body = {
            "model": "booagent-cluster:cascade",
            "messages": [{"role": "user", "content": "give json"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"schema": {"type": ["object"]}}},
        }  # fmt: skip
        async with AsyncTestClient(self.cascade_app('{"a": 1}')) as client:
            response = await client.post(CHAT, json=body)
        assert response.status_code == 200
        assert response.json()["booagent"]["steps"][0]["signal"] == "json_valid"

    @pytest.mark.parametrize(
        ("response_format", "param"),
        [
            ({"type": "json_schema", "json_schema": "x"}, "response_format.json_schema"),
            (
                {"type": "json_schema", "json_schema": {"schema": []}},
                "response_format.json_schema.schema",
            ),
            ({"type": 5}, "response_format.type"),
        ],
    )
    async def test_malformed_response_formats_name_their_field(
        self, response_format: dict[str, Any], param: str
    ) -> None:
        """Finding: a ``json_schema`` or ``schema`` that is not an object crashed the cascade
        (500); it is a 400 naming the field now, as with OpenAI."""
        body = {
            "model": "booagent-cluster:cascade",
            "messages": [{"role": "user", "content": "give json"}],
            "response_format": response_format,
        }
        async with AsyncTestClient(self.cascade_app('{"a": 1}')) as client:
            assert_openai_error(await client.post(CHAT, json=body), 400, param=param)

    @pytest.mark.parametrize(
        ("prompt", "reply", "signal"),
        [
            pytest.param("comma-separated " * 20_000, "a, b", "agreement", id="prompt"),
            pytest.param(
                "a numbered list of exactly 3 items", "\n" * 200_000, "instructions", id="answer"
            ),
        ],
    )
    async def test_instruction_scans_are_quick(self, prompt: str, reply: str, signal: str) -> None:
        """Finding: the cascade's instruction checks took minutes on a 320 KB prompt (and
        30 s on an answer of 40,000 newlines), holding the event loop; they take
        milliseconds now."""
        body = {
            "model": "booagent-cluster:cascade",
            "messages": [{"role": "user", "content": prompt}],
        }
        started = time.perf_counter()
        async with AsyncTestClient(self.cascade_app(reply)) as client:
            response = await client.post(CHAT, json=body)
        assert response.status_code == 200
        assert response.json()["booagent"]["steps"][0]["signal"] == signal
        assert time.perf_counter() - started < 2.0
