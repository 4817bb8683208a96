"""A capturing OpenAI-compatible server for studying what Open WebUI sends.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` on loopback, writes every request
it receives (method, path, headers with ``Authorization`` redacted, JSON body) as one JSON
file into an output directory, and answers plausibly so that Open WebUI carries on with all
of its chores:

* a chat turn gets a short Markdown answer with a Python code block, streamed as SSE
  ``data:`` frames ending with ``data: [DONE]`` when ``stream`` is true, or as one
  ``chat.completion`` object otherwise;
* a request whose last user message starts with ``### Task:`` gets the JSON the task asks
  for (``{"title": ...}``, ``{"tags": [...]}``, ``{"follow_ups": [...]}``,
  ``{"queries": [...]}``, ...).

Standard library only (it runs under any Python >= 3.11, no venv needed)::

    python tests/openwebui/capture_server.py 8199 --out /tmp/owui-capture

Usage in streams follows OpenAI by default (a final ``choices: []`` chunk with ``usage`` only
when ``stream_options.include_usage`` is true); ``--usage always`` sends it on every stream
and ``--timings`` adds a llama.cpp-style ``timings`` object to the last chunk, which is what
Open WebUI reads to show token usage and speed under an answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

MODEL_IDS = ("booagent-cluster", "qwen2.5-coder-1.5b")

PALINDROME_ANSWER = """Here is a simple Python function that checks whether a string is a \
palindrome, ignoring case and non-alphanumeric characters:

```python
def is_palindrome(text: str) -> bool:
    \"\"\"Return True if text reads the same forwards and backwards.\"\"\"
    cleaned = [ch.lower() for ch in text if ch.isalnum()]
    return cleaned == cleaned[::-1]
```

Example:

```python
print(is_palindrome("A man, a plan, a canal: Panama"))  # True
print(is_palindrome("hello"))  # False
```

The function keeps only letters and digits, lowercases them, and compares the list with its \
reverse."""

FOLLOW_UP_ANSWER = """Sure. Here is the same function with type hints, a docstring and a few \
tests written for pytest:

```python
import pytest


def is_palindrome(text: str) -> bool:
    cleaned = "".join(ch.lower() for ch in text if ch.isalnum())
    return cleaned == cleaned[::-1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("racecar", True), ("A man, a plan, a canal: Panama", True), ("hello", False), ("", True)],
)
def test_is_palindrome(text: str, expected: bool) -> None:
    assert is_palindrome(text) is expected
```

Run the tests with `pytest -q`."""

TASK_ANSWERS: tuple[tuple[str, str, Any], ...] = (
    # (kind, marker searched for in the task prompt, JSON answer)
    ("title", '"title"', {"title": "Python Palindrome Checker"}),
    ("tags", '"tags"', {"tags": ["Technology", "Programming", "Python"]}),
    (
        "follow_ups",
        '"follow_ups"',
        {
            "follow_ups": [
                "Add type hints and pytest tests to the function.",
                "How would I make it work for Unicode accents?",
                "What is the time complexity of this approach?",
            ]
        },
    ),
    ("queries", '"queries"', {"queries": ["python palindrome function"]}),
    ("autocomplete", '"text"', {"text": ""}),
    ("image_prompt", '"prompt"', {"prompt": "A code editor showing a palindrome function."}),
    ("tool_calls", '"tool_calls"', {"tool_calls": []}),
)


def _text_of(content: Any) -> str:
    """The text of a message ``content`` (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def classify(body: Any) -> str:
    """Name the kind of a chat request: ``chat`` or ``task_<kind>``."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return "unknown"
    user_texts = [
        _text_of(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    last_user = user_texts[-1] if user_texts else ""
    system = " ".join(
        _text_of(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") == "system"
    )
    if last_user.lstrip().startswith("### Task:"):
        for kind, marker, _ in TASK_ANSWERS:
            if marker in last_user:
                return f"task_{kind}"
        return "task_other"
    if system.startswith("Available Tools:"):
        return "task_tool_calls"
    if "reflect the speaker's likely facial expression" in last_user:
        return "task_emoji"
    return "chat"


def answer_text(kind: str, body: dict[str, Any]) -> str:
    """The text the server answers to a request of this kind."""
    if kind.startswith("task_"):
        for task_kind, _, answer in TASK_ANSWERS:
            if kind == f"task_{task_kind}":
                return json.dumps(answer)
        return "🙂" if kind == "task_emoji" else "{}"
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    last = _text_of(users[-1].get("content")) if users else ""
    if len(users) <= 1 or ("palindrome" in last.lower() and "test" not in last.lower()):
        return PALINDROME_ANSWER
    return FOLLOW_UP_ANSWER


def _chunks(text: str, size: int = 24) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def usage_for(body: dict[str, Any], text: str) -> dict[str, int]:
    """A plausible token count (about 4 characters per token)."""
    prompt_chars = len(json.dumps(body.get("messages", [])))
    prompt = max(1, prompt_chars // 4)
    completion = max(1, len(text) // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def timings_for(usage: dict[str, int], elapsed: float) -> dict[str, float]:
    """A llama.cpp ``timings`` object (what ``llama-server`` adds to its last chunk)."""
    predicted_ms = max(elapsed * 1000.0, 1.0)
    prompt_ms = 5.0
    return {
        "prompt_n": usage["prompt_tokens"],
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / usage["prompt_tokens"],
        "prompt_per_second": usage["prompt_tokens"] / prompt_ms * 1000.0,
        "predicted_n": usage["completion_tokens"],
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / usage["completion_tokens"],
        "predicted_per_second": usage["completion_tokens"] / predicted_ms * 1000.0,
    }


class Recorder:
    """Writes one JSON file per request into ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count(1 + len(list(out.glob("*.json"))))

    def write(self, method: str, path: str, headers: list[tuple[str, str]], raw: bytes) -> Any:
        redacted: dict[str, str] = {}
        for name, value in headers:
            if name.lower() in ("authorization", "x-api-key", "cookie"):
                scheme, _, secret = value.partition(" ")
                value = f"{scheme} <redacted, {len(secret)} chars>" if secret else "<redacted>"
                if not secret and scheme.lower() == "bearer":
                    value = "Bearer <empty>"
            redacted[name] = value
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        kind = (
            classify(body)
            if path.endswith("/chat/completions")
            else path.strip("/").replace("/", "_")
        )
        seq = next(self._seq)
        record = {
            "seq": seq,
            "time": time.time(),
            "kind": kind,
            "method": method,
            "path": path,
            "headers": redacted,
            "body_bytes": len(raw),
            "body": body,
        }
        name = f"{seq:04d}_{method}_{kind}.json"
        (self.out / name).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        print(f"captured {name}", file=sys.stderr, flush=True)
        return body


class CaptureServer:
    def __init__(self, recorder: Recorder, args: argparse.Namespace) -> None:
        self.recorder = recorder
        self.split_usage = bool(args.split_usage)
        self.usage_mode = str(args.usage)
        self.timings = bool(args.timings)
        self.delay = float(args.delay)
        self.error_after: int | None = args.error_after

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: list[tuple[str, str]] = []
        while True:
            hline = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not hline:
                break
            name, _, value = hline.partition(":")
            headers.append((name.strip(), value.strip()))
        lower = {k.lower(): v for k, v in headers}
        raw = await self._read_body(reader, lower)
        path = target.split("?", 1)[0]
        body = self.recorder.write(method, target, headers, raw)
        keep_alive = lower.get("connection", "").lower() != "close"
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._send_json(writer, 200, self._models(), keep_alive)
        elif method == "POST" and path.endswith("/chat/completions") and isinstance(body, dict):
            await self._chat(writer, body, keep_alive)
        else:
            error = {"error": {"message": f"no route {method} {path}", "type": "not_found"}}
            await self._send_json(writer, 404, error, keep_alive)
        return keep_alive

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            return b"".join(parts)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    @staticmethod
    def _models() -> dict[str, Any]:
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": mid, "object": "model", "created": now, "owned_by": "booagent"}
                for mid in MODEL_IDS
            ],
        }

    @staticmethod
    async def _send_json(
        writer: asyncio.StreamWriter, status: int, payload: Any, keep_alive: bool
    ) -> None:
        data = json.dumps(payload).encode()
        reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nX-Request-Id: {uuid.uuid4().hex}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()

    async def _chat(
        self, writer: asyncio.StreamWriter, body: dict[str, Any], keep_alive: bool
    ) -> None:
        kind = classify(body)
        text = answer_text(kind, body)
        model = str(body.get("model") or MODEL_IDS[0])
        started = time.monotonic()
        usage = usage_for(body, text)
        if not body.get("stream"):
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            if self.timings:
                payload["timings"] = timings_for(usage, time.monotonic() - started)
            await self._send_json(writer, 200, payload, keep_alive)
            return
        await self._stream(writer, body, model, text, started)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        body: dict[str, Any],
        model: str,
        text: str,
        started: float,
    ) -> None:
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"Transfer-Encoding: chunked\r\nX-Request-Id: {uuid.uuid4().hex}\r\n\r\n"
        )
        writer.write(head.encode())
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        opts = body.get("stream_options") or {}
        want_usage = self.usage_mode == "always" or (
            self.usage_mode == "requested"
            and isinstance(opts, dict)
            and bool(opts.get("include_usage"))
        )
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

        async def send(obj: dict[str, Any] | str) -> None:
            line = obj if isinstance(obj, str) else json.dumps({**base, **obj})
            data = f"data: {line}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        extra = {"usage": None} if want_usage else {}
        await send(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        )
        for n, piece in enumerate(_chunks(text)):
            if self.error_after is not None and n >= self.error_after:
                # An OpenAI-style error frame with no choices, then the end of the stream.
                await send(
                    {
                        "error": {
                            "message": "capture server: injected stream error",
                            "type": "server_error",
                            "param": None,
                            "code": "injected",
                        }
                    }
                )
                await send("[DONE]")
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return
            await asyncio.sleep(self.delay)
            await send(
                {
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                    **extra,
                }
            )
        usage = usage_for(body, text)
        timings = (
            {"timings": timings_for(usage, time.monotonic() - started)} if self.timings else {}
        )
        last: dict[str, Any] = {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            **extra,
        }
        # Open WebUI adds up token counts over every chunk that carries usage or timings
        # (open_webui/utils/middleware.py, merge_usage): send them together, once, unless
        # --split-usage asks to reproduce the double count.
        if not want_usage or self.split_usage:
            last.update(timings)
        await send(last)
        if want_usage:
            final = {"choices": [], "usage": usage}
            if not self.split_usage:
                final.update(timings)
            await send(final)
        await send("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def serve(args: argparse.Namespace) -> None:
    recorder = Recorder(Path(args.out))
    app = CaptureServer(recorder, args)
    server = await asyncio.start_server(app.handle, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"capture server on http://{args.host}:{args.port}/v1 -> {args.out}",
        file=sys.stderr,
        flush=True,
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--out", default="owui-capture", help="directory for the request files")
    parser.add_argument(
        "--usage",
        choices=("requested", "always", "never"),
        default="requested",
        help="when streams end with a usage chunk (default: when stream_options.include_usage)",
    )
    parser.add_argument("--timings", action="store_true", help="add llama.cpp timings to answers")
    parser.add_argument(
        "--split-usage",
        action="store_true",
        help="send timings in the finish chunk and usage in a later one (Open WebUI then "
        "counts the tokens twice)",
    )
    parser.add_argument(
        "--error-after",
        type=int,
        default=None,
        metavar="N",
        help="end streamed chat turns with an error frame after N content chunks",
    )
    parser.add_argument("--delay", type=float, default=0.02, help="seconds between stream chunks")
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("only loopback addresses are allowed")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
