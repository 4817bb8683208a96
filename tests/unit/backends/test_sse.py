"""Tests for backends.sse: frame encoding, line decoding, and their round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.sse import DONE, ByteDecoder, Event, EventDecoder, encode_comment, encode_data

# Payloads on the wire are JSON text: valid UTF-8, and never a bare CR (an SSE line ending).
payloads = st.text(st.characters(codec="utf-8", exclude_characters="\r"))
comment_texts = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))


def decode(stream: bytes) -> list[Event]:
    """Feed ``stream`` to a decoder line by line, as a client reading the wire would."""
    decoder = EventDecoder()
    events = [decoder.feed(line) for line in stream.decode().split("\n")]
    events.append(decoder.close())
    return [e for e in events if e is not None]


class TestEncode:
    def test_single_line_payload_is_one_data_frame(self) -> None:
        """A payload without newlines becomes one ``data:`` line and a blank line."""
        assert encode_data('{"a": 1}') == b'data: {"a": 1}\n\n'

    def test_multiline_payload_becomes_several_data_lines(self) -> None:
        """Each line of the payload gets its own ``data:`` line within one frame."""
        assert encode_data("a\nb") == b"data: a\ndata: b\n\n"

    def test_comment_frame_starts_with_colon(self) -> None:
        """A keep-alive is a comment line followed by a blank line."""
        assert encode_comment("ping") == b": ping\n\n"
        assert encode_comment() == b": \n\n"


class TestEventDecoder:
    def test_blank_line_completes_the_event(self) -> None:
        """Data lines accumulate until the blank line, then form one event."""
        decoder = EventDecoder()
        assert decoder.feed("data: one") is None
        assert decoder.feed("data: two") is None
        assert decoder.feed("") == Event("one\ntwo")

    def test_value_without_space_after_colon(self) -> None:
        """``data:x`` is the same field as ``data: x``; only one leading space is dropped."""
        decoder = EventDecoder()
        decoder.feed("data:x")
        decoder.feed("data:  y")
        assert decoder.feed("") == Event("x\n y")

    def test_comment_lines_produce_nothing(self) -> None:
        """A keep-alive comment yields no event and does not end a pending one."""
        decoder = EventDecoder()
        decoder.feed("data: a")
        assert decoder.feed(": keep-alive") is None
        decoder.feed("data: b")
        assert decoder.feed("") == Event("a\nb")

    def test_blank_lines_without_data_produce_nothing(self) -> None:
        """Repeated blank lines are not empty events."""
        decoder = EventDecoder()
        assert decoder.feed("") is None
        assert decoder.feed("") is None

    def test_unknown_fields_are_ignored(self) -> None:
        """``event:``, ``id:`` and ``retry:`` lines are not data."""
        decoder = EventDecoder()
        for line in ("event: message", "id: 7", "retry: 100"):
            assert decoder.feed(line) is None
        assert decoder.feed("") is None

    def test_bare_error_line_is_an_error_event(self) -> None:
        """Older llama-server builds send ``error: {...}``; it becomes an error event at once."""
        decoder = EventDecoder()
        assert decoder.feed('error: {"message": "boom"}') == Event(
            '{"message": "boom"}', kind="error"
        )

    def test_close_delivers_an_unterminated_event(self) -> None:
        """An event whose blank line never came is still delivered at the end of input."""
        decoder = EventDecoder()
        decoder.feed(f"data: {DONE}")
        assert decoder.close() == Event(DONE)
        assert decoder.close() is None


class TestByteDecoder:
    def test_strips_line_endings_and_flushes_at_end(self) -> None:
        """CRLF line endings are tolerated and the last unterminated event is delivered."""
        decoder = ByteDecoder()
        events = decoder.feed(b"data: a\r\n\r\n: ping\r\n\r\ndata: [DONE]\r\n")
        assert events == [Event("a")]
        assert decoder.close() == [Event(DONE)]

    def test_an_unterminated_last_line_still_counts(self) -> None:
        decoder = ByteDecoder()
        assert decoder.feed(b"data: a\n\ndata: [DO") == [Event("a")]
        assert decoder.feed(b"NE]") == []
        assert decoder.close() == [Event(DONE)]

    @given(st.lists(payloads), st.data())
    def test_any_split_of_the_body_gives_the_same_events(
        self, items: list[str], data: st.DataObject
    ) -> None:
        """However the network cuts the body (inside a line, a UTF-8 character or a CRLF),
        the events are the payloads, in order."""
        stream = b"".join(encode_data(p) for p in items)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        decoder, events = ByteDecoder(), []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            events += decoder.feed(stream[start:end])
        events += decoder.close()
        assert [e.data for e in events] == items


class TestRoundTrip:
    @given(st.lists(payloads))
    def test_decoding_encoded_payloads_gives_them_back(self, items: list[str]) -> None:
        """Encoding payloads and decoding the bytes yields exactly the payloads, in order."""
        stream = b"".join(encode_data(p) for p in items)
        assert [e.data for e in decode(stream)] == items
        assert {e.kind for e in decode(stream)} <= {"data"}

    @given(st.lists(st.tuples(payloads, st.lists(comment_texts, max_size=3))), st.data())
    def test_comment_frames_between_events_are_invisible(
        self, items: list[tuple[str, list[str]]], data: st.DataObject
    ) -> None:
        """Keep-alive frames anywhere between events produce no events of their own."""
        leading = data.draw(st.lists(comment_texts, max_size=3))
        stream = b"".join(encode_comment(c) for c in leading)
        for payload, comments in items:
            stream += encode_data(payload) + b"".join(encode_comment(c) for c in comments)
        assert [e.data for e in decode(stream)] == [p for p, _ in items]

    @given(st.lists(payloads, min_size=1), st.data())
    def test_comment_lines_inside_a_frame_are_invisible(
        self, items: list[str], data: st.DataObject
    ) -> None:
        """A comment line between the data lines of one frame neither splits nor alters it."""
        lines: list[str] = []
        for payload in items:
            for line in encode_data(payload).decode().split("\n")[:-2]:
                if data.draw(st.booleans()):
                    lines.append(":" + data.draw(comment_texts))
                lines.append(line)
            lines.append("")
        assert [e.data for e in decode("\n".join(lines).encode())] == items
