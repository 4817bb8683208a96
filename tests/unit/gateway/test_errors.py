"""Tests for gateway.errors: every error leaves as an OpenAI body the official SDK parses."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.testing import TestClient
from structlog.testing import capture_logs

from backends import errors
from backends.errors import BooagentError
from gateway import errors as gateway_errors
from gateway.errors import EXCEPTION_HANDLERS, error_body, error_headers

Maker = Callable[[str], BooagentError]

MAKERS: dict[type[BooagentError], Maker] = {
    errors.BooagentError: errors.BooagentError,
    gateway_errors.ClientError: gateway_errors.ClientError,
    gateway_errors.InvalidRequest: lambda m: gateway_errors.InvalidRequest(
        m, param="messages[0].role"
    ),
    gateway_errors.AuthenticationFailed: gateway_errors.AuthenticationFailed,
    gateway_errors.ModelNotFound: lambda m: gateway_errors.ModelNotFound(m, param="model"),
    gateway_errors.BodyTooLarge: gateway_errors.BodyTooLarge,
    errors.PromptTooLong: lambda m: errors.PromptTooLong(m, param="messages"),
    errors.CapacityError: lambda m: errors.CapacityError(m, retry_after=2.5),
    errors.QueueTimeout: lambda m: errors.QueueTimeout(m, retry_after=0.2),
    errors.NoNodeAvailable: lambda m: errors.NoNodeAvailable(m, retry_after=2),
    errors.NodeError: lambda m: errors.NodeError("n1", m),
    errors.RetryableNodeError: lambda m: errors.RetryableNodeError("n1", m),
    errors.NodeUnreachable: lambda m: errors.NodeUnreachable("n1", m),
    errors.NodeTimeout: lambda m: errors.NodeTimeout("n1", m),
    errors.NodeOverloaded: lambda m: errors.NodeOverloaded("n1", m, retry_after=3.2),
    errors.NodeServerError: lambda m: errors.NodeServerError("n1", m),
    errors.NodeProtocolError: lambda m: errors.NodeProtocolError("n1", m),
    errors.NodeRejected: lambda m: errors.NodeRejected("n1", m, status_code=422, code="bad"),
    errors.ContextLengthExceeded: lambda m: errors.ContextLengthExceeded("n1", m),
    errors.RequestFailed: lambda m: errors.RequestFailed("n1", m),
    errors.AllNodesFailed: lambda m: errors.AllNodesFailed(
        m, failures=[errors.NodeUnreachable("n1", "refused")]
    ),
    errors.StreamInterrupted: errors.StreamInterrupted,
    errors.ModelFetchError: errors.ModelFetchError,
    errors.UnknownModel: lambda m: errors.UnknownModel(m, ["tiny", "solo"]),
    errors.PackageMissing: lambda m: errors.PackageMissing("pkg==1.0", m),
    errors.ChecksumMismatch: lambda m: errors.ChecksumMismatch(m, expected="ab", actual="cd"),
    errors.NodeProcessError: lambda m: errors.NodeProcessError("n1", m, exit_code=1, output=[m]),
    gateway_errors.RouteNotFound: gateway_errors.RouteNotFound,
    gateway_errors.RateLimited: lambda m: gateway_errors.RateLimited(m, retry_after=20),
    gateway_errors.TokensLimited: lambda m: gateway_errors.TokensLimited(m, retry_after=3),
    gateway_errors.HttpsRequired: gateway_errors.HttpsRequired,
    gateway_errors.MethodNotAllowed: gateway_errors.MethodNotAllowed,
}

SDK_CLASSES: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    404: openai.NotFoundError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


@get("/raise")
async def raise_error(state: State) -> None:
    raise state.error


@post("/echo", status_code=200)
async def echo(request: Request[Any, Any, Any]) -> bytes:
    return await request.body()


def make_app() -> Litestar:
    return Litestar(
        route_handlers=[raise_error, echo],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=64,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )


@pytest.fixture(scope="module")
def gateway() -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app()) as client:
        yield client


def served(client: TestClient[Litestar], error: Exception) -> Any:
    client.app.state.error = error
    return client.get("/raise")


def sdk_error(
    status: int, headers: dict[str, str], content: bytes, max_retries: int = 0
) -> tuple[openai.APIStatusError, int]:
    """What the official SDK raises for this answer, and how many times it asked."""
    calls = 0

    def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal calls
        calls += 1
        return httpx2.Response(status, headers=headers, content=content)

    client = openai.OpenAI(
        api_key="k",
        base_url="http://gateway/v1",
        max_retries=max_retries,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    client.close()
    return caught.value, calls


def test_every_error_class_has_a_maker() -> None:
    """The table below covers the whole exception tree, so new classes are tested too."""
    defined = {
        cls
        for module in (errors, gateway_errors)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BooagentError) and cls.__module__ == module.__name__
    }
    assert defined == set(MAKERS)


@pytest.mark.parametrize("cls", list(MAKERS), ids=lambda cls: cls.__name__)
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(max_size=60))
def test_sdk_parses_the_rendered_error(
    gateway: TestClient[Litestar], cls: type[BooagentError], message: str
) -> None:
    """The SDK raises the right APIStatusError with our message, type, code and param."""
    error = MAKERS[cls](message)
    response = served(gateway, error)
    assert response.status_code == error.status_code
    assert response.json() == error_body(error)
    caught, _ = sdk_error(response.status_code, dict(response.headers), response.content)
    assert type(caught) is SDK_CLASSES.get(
        error.status_code,
        openai.InternalServerError if error.status_code >= 500 else openai.APIStatusError,
    )
    assert caught.status_code == error.status_code
    assert caught.body == error_body(error)["error"]
    expected = f"Error code: {error.status_code}"
    assert caught.message == (f"{expected} - {error.message}" if error.message else expected)
    assert (caught.type, caught.code, caught.param) == (error.type, error.code, error.param)


class TestHeaders:
    @pytest.mark.parametrize(
        ("error", "retry_after"),
        [
            (errors.QueueTimeout("busy", retry_after=0.2), "1"),
            (errors.QueueTimeout("busy", retry_after=6.0), "6"),
            (errors.NoNodeAvailable("none", retry_after=2.5), "3"),
            (errors.CapacityError("busy"), "1"),
            (errors.NodeOverloaded("n1", "busy", retry_after=1.5), "2"),
        ],
    )
    def test_capacity_errors_say_when_to_retry(
        self, gateway: TestClient[Litestar], error: BooagentError, retry_after: str
    ) -> None:
        """Busy answers carry Retry-After in whole seconds, rounded up, at least 1."""
        assert served(gateway, error).headers["retry-after"] == retry_after

    def test_overload_without_hint_has_no_retry_after(self) -> None:
        """A node overload that gave no hint invents none."""
        assert "retry-after" not in error_headers(errors.NodeOverloaded("n1", "busy"))

    @pytest.mark.parametrize("cls", [gateway_errors.InvalidRequest, errors.StreamInterrupted])
    def test_other_errors_have_no_retry_headers(self, cls: type[BooagentError]) -> None:
        """Errors that waiting cannot fix carry neither header."""
        assert error_headers(cls("x")) == {}

    def test_all_nodes_failed_tells_the_sdk_not_to_retry(
        self, gateway: TestClient[Litestar]
    ) -> None:
        """After the gateway spent its own retries, the SDK asks once and gives up."""
        error = errors.AllNodesFailed("all 3 attempts failed", failures=[])
        response = served(gateway, error)
        assert response.headers["x-should-retry"] == "false"
        caught, calls = sdk_error(
            response.status_code, dict(response.headers), response.content, max_retries=3
        )
        assert isinstance(caught, openai.InternalServerError)
        assert calls == 1

    def test_all_timeouts_is_a_gateway_timeout(self) -> None:
        """When every attempt timed out, the status is 504."""
        failures: list[errors.NodeError] = [errors.NodeTimeout("n1", "slow")]
        assert errors.AllNodesFailed("x", failures=failures).status_code == 504
        failures.append(errors.NodeUnreachable("n2", "refused"))
        assert errors.AllNodesFailed("x", failures=failures).status_code == 502


class TestFrameworkErrors:
    def test_unknown_path(self, gateway: TestClient[Litestar]) -> None:
        """An unknown endpoint is a 404 in OpenAI shape."""
        response = gateway.get("/v1/nothing")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    def test_wrong_method(self, gateway: TestClient[Litestar]) -> None:
        """A wrong method is a 405 in OpenAI shape."""
        response = gateway.delete("/raise")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_body_too_large(self, gateway: TestClient[Litestar]) -> None:
        """A body over the limit is a 413 request_too_large."""
        response = gateway.post("/echo", json={"x" * 100: 1})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"

    def test_framework_client_error_keeps_its_status(self, gateway: TestClient[Litestar]) -> None:
        """Litestar's own 4xx (here a validation failure) keeps its status and detail."""
        response = served(gateway, ValidationException("bad input"))
        assert response.status_code == 400
        body = response.json()["error"]
        assert (body["type"], body["message"]) == ("invalid_request_error", "bad input")

    @pytest.mark.parametrize(
        "error", [RuntimeError("secret detail"), HTTPException(status_code=503)]
    )
    def test_unexpected_error_is_logged_not_shown(
        self, gateway: TestClient[Litestar], error: Exception
    ) -> None:
        """A bug answers 500 with a generic message and is logged with its type."""
        with capture_logs() as logs:
            response = served(gateway, error)
        assert response.status_code == 500
        body = response.json()["error"]
        assert "secret" not in body["message"]
        assert body["type"] == "server_error"
        assert [log["event"] for log in logs] == ["unexpected_error"]
        assert logs[0]["error_type"] == type(error).__name__
