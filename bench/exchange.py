"""One chat request read byte-exactly, and what its client was shown: complete or not.

The chaos benchmark reads responses itself with httpx rather than the ``openai`` SDK, because
the SDK cannot tell the cases apart that matter here: it stops at ``[DONE]`` and also ends
quietly when a stream closes cleanly without one, so a cut answer would look complete.

Outcomes (:attr:`Exchange.outcome`):

- ``complete``: HTTP 200; a stream that ended with ``data: [DONE]``, with no error frame
  and a ``finish_reason`` in some chunk; a whole answer with a ``finish_reason``.
- ``failed``: a status other than 200, or no response at all (connection refused, reset or
  timed out before the headers); for a whole answer, also a body that could not be read.
- ``interrupted``: a 200 stream that ended with an error frame or without ``[DONE]``; the
  client sees an error (never counted as complete).
- ``truncated_as_complete``: a 200 stream that ended with ``[DONE]`` and no error frame but
  had no ``finish_reason``, or a 200 whole answer without one: a cut answer presented as
  complete. The target is zero.

A complete answer whose node failed mid-answer and which another node of the member went on
with says so in its ``booagent`` object (``continued``: from which node to which, after how
many characters, why); :attr:`Exchange.continued` keeps those hand-overs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

COMPLETE = "complete"
FAILED = "failed"
INTERRUPTED = "interrupted"
TRUNCATED = "truncated_as_complete"


@dataclass(slots=True)
class Exchange:
    """What one request got, on the monotonic clock."""

    request_id: str
    kind: str
    stream: bool
    started: float
    ended: float = 0.0
    status: int = 0
    node: str = ""
    done: bool = False
    error_frame: str = ""
    finish_reason: str | None = None
    content_chars: int = 0
    transport_error: str = ""
    body_error: str = ""
    continued: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.status != 200 or (not self.stream and self.transport_error):
            return FAILED
        if self.stream and (self.error_frame or not self.done):
            return INTERRUPTED
        if self.finish_reason is None:
            return TRUNCATED
        return COMPLETE

    @property
    def silent_cut(self) -> bool:
        """An interrupted stream without an error frame (the SDK would show no error)."""
        return self.outcome == INTERRUPTED and not self.error_frame

    def feed(self, line: str) -> None:
        """Take one SSE line of a stream."""
        if not line.startswith("data:"):
            return
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            data: Any = json.loads(payload)
        except ValueError:
            self.error_frame = self.error_frame or f"unparsable frame: {payload[:80]}"
            return
        if isinstance(data, dict) and "error" in data:
            error = data["error"]
            self.error_frame = str(error.get("code") if isinstance(error, dict) else error)
            return
        self._record(data)
        self._choice(((data or {}).get("choices") or [{}])[0], "delta")

    def take_whole(self, body: bytes) -> None:
        data = json.loads(body)
        self._record(data)
        self._choice((data.get("choices") or [{}])[0], "message")

    def _record(self, data: Any) -> None:
        """The hand-overs the answer's ``booagent`` object names (in its last chunks)."""
        record = data.get("booagent") if isinstance(data, dict) else None
        handed = record.get("continued") if isinstance(record, dict) else None
        if isinstance(handed, list) and handed:
            self.continued = [h for h in handed if isinstance(h, dict)]

    def _choice(self, choice: dict[str, Any], key: str) -> None:
        content = (choice.get(key) or {}).get("content") or ""
        self.content_chars += len(content)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]


async def exchange(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], request_id: str, kind: str
) -> Exchange:
    """POST ``body`` to ``url`` and read the whole response; never raises for HTTP trouble."""
    ex = Exchange(request_id, kind, bool(body.get("stream")), time.monotonic())
    try:
        headers = {"x-request-id": request_id}
        async with client.stream("POST", url, json=body, headers=headers) as response:
            ex.status = response.status_code
            ex.node = response.headers.get("x-booagent-node", "")
            if ex.status != 200:
                ex.body_error = (await response.aread()).decode(errors="replace")[:300]
            elif ex.stream:
                async for line in response.aiter_lines():
                    ex.feed(line)
            else:
                ex.take_whole(await response.aread())
    except httpx.HTTPError as exc:
        ex.transport_error = f"{type(exc).__name__}: {exc}"[:300]
    except ValueError as exc:
        ex.transport_error = f"unreadable answer: {exc}"[:300]
    finally:
        ex.ended = time.monotonic()
    return ex
