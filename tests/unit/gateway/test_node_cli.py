"""`booagent node` and `booagent certs node`: what a user types, and what they are told."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gateway.certs import init
from gateway.cli import main
from gateway.node_cli import _serve


def test_a_serve_spec_names_member_model_context_and_slots(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    serve = _serve(f"coder={model}:8192:2", tmp_path)
    assert (serve.member, serve.model, serve.n_ctx, serve.slots) == ("coder", model, 8192, 2)
    assert _serve(f"coder={model}", tmp_path).n_ctx == 4096


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("coder", "MEMBER=MODEL"),
        ("coder=nope-model", "nope-model"),
        ("coder=/missing/model.gguf", "is missing"),
        ("coder=/missing/model.gguf:big", "numbers"),
    ],
)
def test_a_wrong_serve_spec_is_named(spec: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(click.BadParameter, match=message):
        _serve(spec, tmp_path)


def test_a_node_without_its_certificates_says_how_to_get_them(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    result = CliRunner().invoke(
        main, ["node", "--name", "laptop", "--serve", f"x={model}", "--certs", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "booagent certs node laptop" in result.output


def test_certs_node_writes_a_bundle_for_the_machine(tmp_path: Path) -> None:
    init(tmp_path / "certs")
    out = tmp_path / "laptop-certs"
    result = CliRunner().invoke(
        main, ["certs", "node", "laptop", "--certs", str(tmp_path / "certs"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "laptop.key", "laptop.pem"]
    assert (out / "laptop.key").stat().st_mode & 0o777 == 0o600
    assert "BEGIN" not in result.output  # no key or certificate printed
