"""`booagent status` against the real gateway server over fake nodes."""

from __future__ import annotations

import httpx
from click.testing import CliRunner

from backends.config import Member
from backends.errors import NodeUnreachable
from gateway.cli import main
from tests.fakes import FakeNode, fake_pool, settings_for
from tests.harness import running_gateway

M1, M2 = Member(name="m1"), Member(name="m2")


def test_status_shows_nodes_and_the_last_requests() -> None:
    bad = FakeNode("a", fail_before=NodeUnreachable("a", "refused"))
    settings = settings_for([M1, M2], [("a", "m1"), ("b", "m2")])
    pool = fake_pool([(bad, M1), (FakeNode("b", reply="fine thanks"), M2)])
    body = {"model": "m2", "messages": [{"role": "user", "content": "hi"}]}
    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        assert httpx.post(f"{base}/v1/chat/completions", json=body).status_code == 200
        failed = httpx.post(f"{base}/v1/chat/completions", json={**body, "model": "m1"})
        result = CliRunner().invoke(main, ["status", "--url", base], env={"COLUMNS": "200"})
    assert failed.status_code == 502
    assert result.exit_code == 0, result.output
    out = result.output
    assert "1/2 nodes serving" in out
    assert "open" in out and "unreachable: node a: refused" in out
    assert "b " in out and "502" in out and "200" in out


def test_status_says_when_a_key_is_needed() -> None:
    settings = settings_for([M1], [("a", "m1")], server={"api_keys": ["sk-status-0123456"]})
    pool = fake_pool([(FakeNode("a"), M1)])
    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        refused = CliRunner().invoke(main, ["status", "--url", base], env={"BOOAGENT_API_KEY": ""})
        shown = CliRunner().invoke(
            main, ["status", "--url", base], env={"BOOAGENT_API_KEY": "sk-status-0123456"}
        )
    assert refused.exit_code == 1 and "wants an API key" in refused.output
    assert shown.exit_code == 0 and "1/1 nodes serving" in shown.output


def test_status_names_an_unreachable_gateway() -> None:
    result = CliRunner().invoke(main, ["status", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach the gateway" in result.output
