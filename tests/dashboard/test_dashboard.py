"""The dashboard in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright)
against the real gateway server over fake nodes: it shows the nodes, the load, the recent
requests and errors, updates live, and asks for a key when keys are required."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from backends.config import Member
from backends.errors import NodeUnreachable
from tests.fakes import FakeNode, GatedNode, fake_pool, settings_for
from tests.harness import running_gateway

expect.set_options(timeout=15_000)  # a loaded CI machine polls late; the page polls every 2 s
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # `make setup` installs it
M1, M2 = Member(name="m1"), Member(name="m2")
HELLO = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def _page(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    return page


def test_an_idle_cluster_shows_every_node_ready(browser: Browser, tmp_path: Path) -> None:
    nodes = [FakeNode("a"), FakeNode("b")]
    settings = settings_for([M1, M2], [("a", "m1"), ("b", "m2")])
    pool = fake_pool([(nodes[0], M1), (nodes[1], M2)])
    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        page = _page(browser, f"{base}/dashboard")
        expect(page.locator("#summary")).to_have_text("2 of 2 nodes serving")
        expect(page.locator("#nodes tbody tr")).to_have_count(2)
        expect(page.locator("#nodes .badge").first).to_have_text("ready")
        expect(page.locator("#requests")).to_contain_text("no requests yet")
        page.screenshot(path=tmp_path / "idle.png", full_page=True)
        page.close()


def test_a_busy_cluster_shows_load_and_the_requests_as_they_end(
    browser: Browser, tmp_path: Path
) -> None:
    """Requests held by a node show as in flight and queued; once they end they are listed
    with the node that answered, without reloading the page."""
    gated = GatedNode("a", reply="one two three")
    settings = settings_for([M1], [("a", "m1")])
    pool = fake_pool([(gated, M1)])
    loops: list[asyncio.AbstractEventLoop] = []

    def on_the_servers_loop(_: Any) -> Any:
        loops.append(asyncio.get_running_loop())
        return pool

    with running_gateway(settings, pool_factory=on_the_servers_loop) as base:
        page = _page(browser, f"{base}/dashboard")
        threads = [_post_in_thread(base, HELLO) for _ in range(3)]
        expect(page.locator("#nodes .badge").first).to_have_text("busy", timeout=10_000)
        expect(page.locator(".tile", has_text="queued").locator(".v")).to_have_text("2")
        page.screenshot(path=tmp_path / "busy.png", full_page=True)
        loops[0].call_soon_threadsafe(gated.gate.set)
        for thread in threads:
            thread.join(10)
        expect(page.locator("#requests tbody tr")).to_have_count(3, timeout=10_000)
        expect(page.locator("#requests tbody tr").first).to_contain_text("a")
        page.close()


def test_a_node_down_shows_its_breaker_and_the_error(browser: Browser, tmp_path: Path) -> None:
    bad = FakeNode("a", fail_before=NodeUnreachable("a", "connection refused"))
    good = FakeNode("b")
    settings = settings_for([M1, M2], [("a", "m1"), ("b", "m2")])
    pool = fake_pool([(bad, M1), (good, M2)])
    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        assert httpx.post(f"{base}/v1/chat/completions", json=HELLO).status_code == 502
        page = _page(browser, f"{base}/dashboard")
        expect(page.locator("#summary")).to_have_text("1 of 2 nodes serving")
        expect(page.locator("#nodes")).to_contain_text("breaker open")
        expect(page.locator("#errors")).to_contain_text("a: unreachable")
        page.screenshot(path=tmp_path / "down.png", full_page=True)
        page.close()


def test_with_keys_the_page_asks_for_one(browser: Browser, tmp_path: Path) -> None:
    """The page holds no data; the figures come only with a key the gateway accepts."""
    settings = settings_for([M1], [("a", "m1")], server={"api_keys": ["sk-dash-0123456789"]})
    pool = fake_pool([(FakeNode("a"), M1)])
    with running_gateway(settings, pool_factory=lambda _: pool) as base:
        page = _page(browser, f"{base}/dashboard")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#nodes tbody tr")).to_have_count(0)
        page.fill("#key", "wrong-key")
        page.click("#login button")
        expect(page.locator("#login-error")).to_have_text("that key was refused", timeout=5_000)
        page.fill("#key", "sk-dash-0123456789")
        page.click("#login button")
        expect(page.locator("#nodes tbody tr")).to_have_count(1, timeout=5_000)
        expect(page.locator("#login")).to_be_hidden()
        page.close()


def _post_in_thread(base: str, body: dict[str, Any]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30),
        daemon=True,
    )
    thread.start()
    return thread
