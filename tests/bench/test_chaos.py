"""A short chaos run over real nodes: kills never turn into silent or unexplained losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.chaos import ChaosSettings, run_chaos
from bench.exchange import COMPLETE, INTERRUPTED, TRUNCATED
from bench.procs import alive

pytestmark = pytest.mark.e2e

SMOL = "smollm2-135m"


def _two_smol_nodes(path: Path) -> Path:
    """Two SmolLM2 nodes of one member (ports are replaced by the benchmark)."""
    nodes = [
        {"name": name, "member": SMOL, "url": f"http://127.0.0.1:{port}",
         "local": {"port": port, "threads": 1}}
        for name, port in (("smol-a", 8301), ("smol-b", 8302))
    ]  # fmt: skip
    config = {
        "members": [{"name": SMOL, "role": "fast", "model": SMOL, "n_ctx": 2048, "speed": 3}],
        "nodes": nodes,
        "routes": {"code": [SMOL], "general": [SMOL], "chore": [SMOL]},
        "policies": {
            "timeouts": {"first_token": 30, "stall": 10, "total": 120, "queue": 30},
            "breaker": {"failures": 2, "open_seconds": 2},
            "health": {"interval": 0.5, "timeout": 1},
        },
        "strategies": {"default": "route"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_short_chaos_run_loses_nothing_silently(tmp_path: Path) -> None:
    """30 s of mixed load while one of two nodes is SIGKILLed every 4-5 s when the other is up
    (a killed node that is still restarting is skipped, so a slow restart does not leave the
    run with a single kill): no cut answer is presented as complete, the only failures are
    streams whose node died after they began, shown with an error frame, none while the other
    node was up (it goes on with the answer instead), and no process is left behind."""
    settings = ChaosSettings(
        config=_two_smol_nodes(tmp_path / "chaos.yaml"),
        duration=30,
        kill_every=(4.0, 5.0),
        concurrency=2,
        spare=True,
        max_tokens=48,
        progress_every=3600,
    )
    report = run_chaos(settings)

    assert len(report.kills) >= 2
    assert report.of(COMPLETE)
    assert report.of(TRUNCATED) == []
    assert report.unexplained() == []
    assert all(e.error_frame for e in report.of(INTERRUPTED))
    assert report.interrupted_while_member_up(report.grace) == []
    assert all(report.continued_explained(e) for e in report.continued())
    assert report.leftovers == []
    assert not [pid for pid in {*report.timeline.pids, report.gateway_pid} if alive(pid)]
