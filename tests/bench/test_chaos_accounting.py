"""How the chaos benchmark classifies answers and judges failures against node timelines."""

from __future__ import annotations

import datetime
import itertools
import json

import pytest

from bench.chaos import ChaosReport, ChaosSettings, Kill, kill_range
from bench.chaos_report import chaos_markdown
from bench.exchange import COMPLETE, FAILED, INTERRUPTED, TRUNCATED, Exchange
from bench.live import Timeline, bench_config
from bench.report import machine


def _stream(*frames: object, done: bool = True) -> Exchange:
    ex = Exchange("r", "chat", stream=True, started=0.0, ended=1.0, status=200, node="a")
    for frame in frames:
        ex.feed("data: " + json.dumps(frame))
    if done:
        ex.feed("data: [DONE]")
    return ex


def _delta(content: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


class TestOutcome:
    def test_stream_with_done_and_finish_reason_is_complete(self) -> None:
        """[DONE] after a chunk with a finish_reason is a complete answer."""
        assert _stream(_delta("hi"), _delta("", "stop")).outcome == COMPLETE

    def test_stream_without_done_is_interrupted(self) -> None:
        """A stream that ends without [DONE] is interrupted, even with a finish_reason."""
        ex = _stream(_delta("hi"), _delta("", "stop"), done=False)
        assert ex.outcome == INTERRUPTED
        assert ex.silent_cut

    def test_stream_with_error_frame_is_interrupted(self) -> None:
        """An error frame makes the stream interrupted, whatever follows."""
        ex = _stream(_delta("hi"), {"error": {"code": "stream_interrupted"}})
        assert ex.outcome == INTERRUPTED
        assert ex.error_frame == "stream_interrupted"
        assert not ex.silent_cut

    def test_done_without_finish_reason_is_truncated_as_complete(self) -> None:
        """[DONE] with no finish_reason anywhere is a cut answer presented as complete."""
        assert _stream(_delta("hi")).outcome == TRUNCATED

    def test_non_200_is_failed(self) -> None:
        """Any other status is a failure."""
        ex = Exchange("r", "chore", stream=False, started=0.0, status=503)
        assert ex.outcome == FAILED

    def test_whole_answer_needs_finish_reason(self) -> None:
        """A whole 200 answer without finish_reason is truncated as complete."""
        ex = Exchange("r", "chore", stream=False, started=0.0, status=200)
        ex.take_whole(b'{"choices": [{"message": {"content": "x"}, "finish_reason": null}]}')
        assert ex.outcome == TRUNCATED
        ex.take_whole(b'{"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}')
        assert ex.outcome == COMPLETE


def _timeline() -> Timeline:
    timeline = Timeline()
    timeline.events += [
        (0.0, "a", "running"), (0.0, "b", "running"),
        (10.0, "a", "killed"), (10.1, "a", "restarting"), (11.0, "a", "starting"),
        (13.0, "a", "running"), (20.0, "b", "killed"), (20.1, "b", "restarting"),
    ]  # fmt: skip
    return timeline


class TestTimeline:
    def test_up_intervals_end_at_the_next_event(self) -> None:
        """A node is up from `running` to its next event; the last interval is open."""
        assert _timeline().up_intervals("a") == [(0.0, 10.0), (13.0, float("inf"))]
        assert _timeline().up_intervals("b") == [(0.0, 20.0)]

    def test_up_throughout_and_since(self) -> None:
        """Up throughout a window only within one interval; up_since counts from its start."""
        timeline = _timeline()
        assert timeline.up_throughout("a", 1.0, 9.0)
        assert not timeline.up_throughout("a", 9.0, 14.0)
        assert timeline.up_since("a", 15.0) == 2.0
        assert timeline.up_since("a", 12.0) is None

    def test_kills_and_restarts(self) -> None:
        """Kills are counted in a window; restarts are `running` events after the first."""
        timeline = _timeline()
        assert timeline.kills("a", 9.0, 11.0) == 1
        assert timeline.kills("b", 9.0, 11.0) == 0
        assert timeline.restarts() == 1


def _report(*exchanges: Exchange, grace: float = 3.0) -> ChaosReport:
    report = ChaosReport(ChaosSettings(), machine(), datetime.datetime.now())
    report.timeline, report.allowed, report.grace = _timeline(), ("a", "b"), grace
    report.nodes = [("a", "m"), ("b", "m")]
    report.exchanges = list(exchanges)
    report.kills = [Kill(10.0, "a", 1), Kill(20.0, "b", 2)]
    return report


def _failed(started: float, ended: float) -> Exchange:
    return Exchange("r", "chat", stream=True, started=started, ended=ended, status=503)


class TestJudgement:
    def test_failure_while_a_node_was_up_is_unexplained(self) -> None:
        """A 503 while b had been up for longer than the grace period is not explained."""
        report = _report(_failed(11.0, 11.5))
        assert report.failed_while_serving(report.grace) == report.exchanges
        assert report.unexplained() == report.exchanges

    def test_failure_with_every_node_down_or_new_is_explained(self) -> None:
        """After b's death, a is the only node and came back within the grace period."""
        report = _report(_failed(21.0, 21.5), grace=9.0)
        assert report.failed_while_serving(0.0) == report.exchanges
        assert report.failed_while_serving(report.grace) == []
        assert report.unexplained() == []

    def test_interruption_is_explained_only_by_a_kill_of_its_node(self) -> None:
        """A stream cut on a node killed during it is explained; on another node it is not."""
        cut = _stream(_delta("hi"), {"error": {"code": "stream_interrupted"}})
        cut.started, cut.ended = 9.0, 10.5
        other = _stream(_delta("hi"), {"error": {"code": "stream_interrupted"}})
        other.started, other.ended, other.node = 9.0, 10.5, "b"
        report = _report(cut, other)
        assert report.interrupted_explained(cut)
        assert report.unexplained() == [other]


HANDED = {"from": "a", "to": "b", "after_chars": 2, "reason": "unreachable"}


def _continued(started: float, ended: float) -> Exchange:
    """A stream of node a, handed on to b after its first word."""
    ex = _stream(_delta("hi"), {**_delta(" there", "stop"), "booagent": {"continued": [HANDED]}})
    ex.started, ex.ended = started, ended
    return ex


class TestContinued:
    def test_a_continued_answer_is_complete_and_names_its_hand_over(self) -> None:
        ex = _continued(9.0, 10.5)
        assert (ex.outcome, ex.continued) == (COMPLETE, [HANDED])

    def test_a_hand_over_is_explained_by_a_kill_of_the_node_it_left(self) -> None:
        """a was killed at 10.0: a hand-over during 9.0-10.5 is explained, at 11-12 not."""
        during, after = _continued(9.0, 10.5), _continued(11.0, 12.0)
        report = _report(during, after)
        assert report.continued() == [during, after]
        assert report.continued_explained(during) and not report.continued_explained(after)

    def test_an_interruption_while_another_node_of_the_member_was_up_misses_the_target(
        self,
    ) -> None:
        """b was up all through a's stream (cut when a was killed): it could have gone on.
        After b's death at 20, a stream of b with a back up only since 13 is within grace."""
        cut = _stream(_delta("hi"), {"error": {"code": "stream_interrupted"}})
        cut.started, cut.ended = 9.0, 10.5
        late = _stream(_delta("hi"), {"error": {"code": "stream_interrupted"}})
        late.started, late.ended, late.node = 19.0, 20.5, "b"
        report = _report(cut, late)
        assert report.interrupted_while_member_up(report.grace) == [cut, late]
        assert report.interrupted_while_member_up(9.0) == [cut]

    def test_the_report_counts_continued_streams_apart(self) -> None:
        text = chaos_markdown(_report(_continued(9.0, 10.5)))
        assert "| - of which continued on another node of the member" in text
        assert "failed mid-answer | 1 |" in text and "(explained) | 1 |" in text
        assert "| chat | 1 | 1 | 0 | 0 | 0 |" in text


class TestSettings:
    def test_bench_config_moves_ports_and_keeps_the_rest(self) -> None:
        """The gateway and local nodes get new ports; remote nodes and policies stay."""
        raw = {
            "server": {"port": 8100, "api_keys": ["k"]},
            "nodes": [
                {
                    "name": "a",
                    "member": "m",
                    "url": "http://127.0.0.1:8201",
                    "local": {"port": 8201},
                },
                {"name": "r", "member": "m", "url": "http://10.0.0.2:8080"},
            ],
            "policies": {"retry": {"attempts": 2}},
        }
        config = bench_config(raw, itertools.count(30000))
        assert config["server"] == {"port": 30000, "api_keys": [], "host": "127.0.0.1"}
        assert config["nodes"][0]["url"] == "http://127.0.0.1:30001"
        assert config["nodes"][0]["local"] == {"port": 30001}
        assert config["nodes"][1] == raw["nodes"][1]
        assert config["policies"] == raw["policies"]
        assert raw["server"]["port"] == 8100

    @pytest.mark.parametrize(("text", "pair"), [("10-30", (10.0, 30.0)), ("8", (8.0, 8.0))])
    def test_kill_range(self, text: str, pair: tuple[float, float]) -> None:
        """`LOW-HIGH` or one number."""
        assert kill_range(text) == pair

    @pytest.mark.parametrize("text", ["0-5", "9-3", "x"])
    def test_bad_kill_range(self, text: str) -> None:
        """Zero, reversed or non-numeric ranges are refused."""
        with pytest.raises(ValueError):
            kill_range(text)
