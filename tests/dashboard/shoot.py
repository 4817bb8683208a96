"""Screenshots of the dashboard of a real cluster (``make up`` in another terminal), for the
README: idle, busy under a burst of real requests, and with a node down.

    .venv/bin/python tests/dashboard/shoot.py http://127.0.0.1:8100 --out docs/dashboard

Drives Debian's ``/usr/bin/chromium`` through Playwright. The node is taken down by stopping
its process (SIGSTOP: its health checks time out) and brought back with SIGCONT, so the
cluster is as it was afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from openai import OpenAI
from playwright.sync_api import Page, expect, sync_playwright

QUESTIONS = [
    ("booagent-cluster", "Write a Python function that merges two sorted lists."),
    ("booagent-cluster", "What is the capital of Australia? One sentence."),
    ("booagent-cluster", "Explain what a mutex is in two sentences."),
    ("booagent-cluster", "Write a bash one-liner that counts lines in all .py files."),
    ("booagent-cluster", "Name three prime numbers above 100."),
    ("booagent-cluster:ensemble", "Is 97 a prime number? Answer yes or no."),
]


def main() -> None:
    args = _args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.base.rstrip("/")
    key = os.environ.get("BOOAGENT_API_KEY", "none")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"{base}/dashboard")
        expect(page.locator("#nodes tbody tr").first).to_be_visible(timeout=15_000)
        _shot(page, args.out / "idle.png")
        _busy(page, base, key, args.out / "busy.png")
        _down(page, base, args.node, args.out / "down.png")
        browser.close()


def _busy(page: Page, base: str, key: str, path: Path) -> None:
    client = OpenAI(base_url=f"{base}/v1", api_key=key, timeout=300)
    threads = [threading.Thread(target=_ask, args=(client, m, q)) for m, q in QUESTIONS]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    expect(page.locator(".tile", has_text="queued").locator(".v")).not_to_have_text(
        "0", timeout=30_000
    )
    time.sleep(8)  # a few answers end meanwhile, so the recent list has rows
    _shot(page, path)
    for thread in threads:
        thread.join(600)
    page.wait_for_timeout(2500)


def _ask(client: OpenAI, model: str, question: str) -> None:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=200
    )


def _down(page: Page, base: str, node: str, path: Path) -> None:
    with _stopped(_node_port(base, node)):
        expect(page.locator("#nodes")).to_contain_text("down", timeout=60_000)
        page.wait_for_timeout(2500)
        _shot(page, path)
    expect(page.locator("#summary")).to_contain_text("nodes serving", timeout=60_000)


def _node_port(base: str, name: str) -> int:
    nodes: list[dict[str, Any]] = httpx.get(f"{base}/v1/cluster", timeout=10).json()["nodes"]
    url = next(n["url"] for n in nodes if n["name"] == name)
    port = urlparse(url).port
    assert port is not None, url
    return port


@contextlib.contextmanager
def _stopped(port: int) -> Iterator[None]:
    """The node process that serves ``port``, stopped for the block, then resumed."""
    pid = next(p for p in _pids() if f"--port {port}" in _cmdline(p))
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _pids() -> Iterator[int]:
    return (int(p) for p in os.listdir("/proc") if p.isdigit())


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _shot(page: Page, path: Path) -> None:
    page.wait_for_timeout(2500)  # one more poll, so the page shows the latest figures
    page.screenshot(path=path, full_page=True)
    print(f"wrote {path}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?", default="http://127.0.0.1:8100")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    parser.add_argument("--node", default="smollm-1", help="The node to take down.")
    return parser.parse_args()


if __name__ == "__main__":
    main()
