"""The captured Open WebUI 0.12.4 requests (tests/fixtures/openwebui) and the capture server.

Pins the facts the gateway is built on (see tests/fixtures/openwebui/README.md) and checks that
tests/openwebui/capture_server.py classifies and answers each captured request as Open WebUI
expects. Standard library only; the server runs as a subprocess on a free loopback port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.openwebui.capture_server import answer_text, classify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openwebui"
SERVER = Path(__file__).with_name("capture_server.py")

CHAT_TURNS = ("chat_turn_1.json", "chat_turn_2.json", "chat_turn_1_usage_capability.json")
CHORES = {
    "task_title.json": "task_title",
    "task_tags.json": "task_tags",
    "task_follow_ups.json": "task_follow_ups",
    "task_follow_ups_turn_2.json": "task_follow_ups",
}


def load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


def wire_bytes(body: Any) -> int:
    """Size as Open WebUI sends it: compact UTF-8 JSON."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


@pytest.mark.parametrize("name", CHAT_TURNS)
def test_chat_turns_carry_36_builtin_tools_and_no_max_tokens(name: str) -> None:
    body = load(name)
    assert body["model"] == "booagent-cluster"
    assert body["stream"] is True
    assert len(body["tools"]) == 36
    assert 24_000 < wire_bytes(body["tools"]) < 26_000
    assert "max_tokens" not in body and "max_completion_tokens" not in body
    assert "tool_choice" not in body
    assert classify(body) == "chat"


def test_usage_is_asked_for_only_with_the_usage_capability() -> None:
    assert "stream_options" not in load("chat_turn_1.json")
    assert "stream_options" not in load("chat_turn_2.json")
    assert load("chat_turn_1_usage_capability.json")["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("name", "kind"), sorted(CHORES.items()))
def test_chores_are_single_task_messages_without_tools(name: str, kind: str) -> None:
    body = load(name)
    assert body["stream"] is False
    assert "tools" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].startswith("### Task:")
    assert body.get("max_tokens") == (1000 if kind == "task_title" else None)
    assert classify(body) == kind
    key = kind.removeprefix("task_")
    assert key in json.loads(answer_text(kind, body))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    out = tmp_path / "requests"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(port), "--out", str(out), "--delay", "0"],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield base, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def post(url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-secret"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers.get("Content-Type", ""), resp.read()


def test_capture_server_streams_records_and_redacts(server: tuple[str, Path]) -> None:
    base, out = server
    with urllib.request.urlopen(base + "/models", timeout=10) as resp:
        ids = [m["id"] for m in json.loads(resp.read())["data"]]
    assert ids == ["booagent-cluster", "qwen2.5-coder-1.5b"]

    ctype, raw = post(base + "/chat/completions", load("chat_turn_1_usage_capability.json"))
    assert ctype == "text/event-stream"
    frames = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "def is_palindrome" in text

    ctype, raw = post(base + "/chat/completions", load("task_title.json"))
    assert ctype == "application/json"
    title = json.loads(json.loads(raw)["choices"][0]["message"]["content"])["title"]
    assert title

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [r["kind"] for r in records] == ["v1_models", "chat", "task_title"]
    assert records[1]["headers"]["Authorization"] == "Bearer <redacted, 9 chars>"
    assert "sk-secret" not in "".join(p.read_text() for p in out.glob("*.json"))
