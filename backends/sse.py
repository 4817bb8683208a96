"""Server-sent events: the framing of OpenAI streams, both directions.

``encode_data`` and ``encode_comment`` write frames; :class:`EventDecoder` reads them a line
at a time, :class:`ByteDecoder` a piece of the body at a time. Comment lines (``:``) are
keep-alives and produce no event. A bare ``error:`` line, which older llama-server builds send
instead of a data frame, is turned into an error event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DONE = "[DONE]"


def encode_data(payload: str) -> bytes:
    """One ``data:`` frame; a payload with newlines becomes several ``data:`` lines."""
    lines = payload.split("\n")
    return ("".join(f"data: {line}\n" for line in lines) + "\n").encode()


def encode_comment(text: str = "") -> bytes:
    """A comment frame, ignored by clients: a keep-alive."""
    return f": {text}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event. ``kind`` is ``"data"`` or ``"error"`` (a bare ``error:`` line)."""

    data: str
    kind: str = "data"


@dataclass(slots=True)
class EventDecoder:
    """Turns SSE lines (without their line ending) into events, per the WHATWG rules we need."""

    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        """Take one line; return the event it completes, if any."""
        if not line:
            return self._flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "error":
            return Event(value, kind="error")
        return None

    def close(self) -> Event | None:
        """End of input: an event whose blank line never came is still delivered."""
        return self._flush()

    def _flush(self) -> Event | None:
        if not self._data:
            return None
        event = Event("\n".join(self._data))
        self._data.clear()
        return event


@dataclass(slots=True)
class ByteDecoder:
    """Turns the body's bytes, in pieces as they arrive, into events.

    Splits lines itself (an ``aiohttp`` ``readline`` gives up on a line over 512 KiB) and
    hands every event a piece completes at once, so a reader waits only when it has none.
    """

    _lines: EventDecoder = field(default_factory=EventDecoder)
    _rest: bytes = b""

    def feed(self, data: bytes) -> list[Event]:
        *lines, self._rest = (self._rest + data).split(b"\n")
        return self._events(lines)

    def close(self) -> list[Event]:
        """End of the body: an unterminated last line and event still count."""
        lines, self._rest = ([self._rest] if self._rest else []), b""
        events = self._events(lines)
        last = self._lines.close()
        return events if last is None else [*events, last]

    def _events(self, lines: list[bytes]) -> list[Event]:
        events = []
        for line in lines:
            event = self._lines.feed(line.decode(errors="replace").rstrip("\r"))
            if event is not None:
                events.append(event)
        return events
