"""The HTTP API fuzzed from its own OpenAPI document (schemathesis), in process, over fake nodes.

Every generated request, valid or not, must get a non-5xx answer that matches the document;
every error is the OpenAI body. The run is bounded by Hypothesis settings (examples per
operation), so the whole file stays well under a minute on two cores.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response

from backends.config import Member
from gateway.app import create_app
from tests.fakes import FakeNode, fake_pool, settings_for

HUGE = 100_000_000
"""Contexts no fuzzed prompt outgrows: this suite checks the API's shapes, not fitting."""
M1, M2 = Member(name="m1", n_ctx=HUGE), Member(name="m2", n_ctx=HUGE)
KEY = "sk-fuzz"
ERROR_FIELDS = {"message", "type", "param", "code"}


JSON_ANSWER = '{"answer": [1, "two", {"three": null}], "ok": true}'
MIXED_ANSWER = "Answer: 42\n1. one\n2. two\n```python\nprint(42)\n```"


def fuzz_app(**server: Any) -> Any:
    """The gateway over two ready fake nodes, one per member, quiet below warnings. One
    answers JSON and the other a list, a number and code, so the cascade's checks of answers
    against the request's schemas and instructions run too."""
    nodes = [(FakeNode("a", reply=JSON_ANSWER), M1), (FakeNode("b", reply=MIXED_ANSWER), M2)]
    config = settings_for(
        [M1, M2], [("a", "m1"), ("b", "m2")], server={"log_level": "warning", **server}
    )
    pool = fake_pool(nodes)
    return create_app(config, pool_factory=lambda _: pool)


schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())
auth_schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    fuzz_app(api_keys=[KEY]),
    config=schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": KEY}}}}),
    headers={"authorization": f"Bearer {KEY}"},
)


def openai_error_body(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx and 5xx body is exactly ``{"error": {message, type, param, code}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_FIELDS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return None


def integral_floats_as_ints(value: Any) -> Any:
    """JSON Schema counts ``600.0`` as an integer; the gateway, like OpenAI, answers 400
    ("expected an integer") to a decimal where an integer is due. Valid cases send integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(v) for v in value]
    return value


def call_and_validate(case: Case) -> None:
    if case.meta is not None and case.meta.generation.mode.is_positive:
        case.body = integral_floats_as_ints(case.body)
    case.call_and_validate(additional_checks=[openai_error_body])


FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@schema.parametrize()
@FUZZ
def test_every_request_gets_a_documented_answer(case: Case) -> None:
    """Valid or not, no request gets a 5xx, and every answer matches the document."""
    call_and_validate(case)


@auth_schema.parametrize()
@settings(FUZZ, max_examples=20)
def test_with_keys_every_request_gets_a_documented_answer(case: Case) -> None:
    """With API keys on, generated requests (with and without a key) get documented answers."""
    call_and_validate(case)


def test_document_is_valid_openapi_31() -> None:
    """The served document is valid OpenAPI 3.1 and describes every endpoint."""
    schema.validate()
    raw = schema.raw_schema
    assert raw["openapi"] == "3.1.0"
    assert set(raw["paths"]) == {
        "/v1/chat/completions",
        "/v1/models",
        "/models",
        "/health",
        "/ready",
        "/v1/cluster",
    }
    components = raw["components"]["schemas"]
    assert set(components["Options"]["properties"]) >= {"strategy", "members", "samples"}
    assert components["ChatRequest"]["properties"]["model"]["enum"][0] == "booagent-cluster"
    assert components["Error"]["properties"]["error"]["required"] == sorted(
        ERROR_FIELDS, key=["message", "type", "param", "code"].index
    )
