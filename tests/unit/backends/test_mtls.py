"""backends.mtls.TlsFiles: certificates replaced on disk are used without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from backends.mtls import TlsError, TlsFiles, gateway_context, node_context
from gateway.certs import init, node_bundle


def _gateway(certs: Path) -> TlsFiles:
    return TlsFiles(certs / "gateway.pem", certs / "gateway.key", certs / "ca.pem",
                    gateway_context)  # fmt: skip


def test_a_renewed_certificate_gives_a_new_context(tmp_path: Path) -> None:
    init(tmp_path)
    files = _gateway(tmp_path)
    before = files.context
    assert not files.refresh()
    init(tmp_path, force=True)
    assert files.refresh() and files.context is not before


def test_a_broken_file_keeps_the_context_in_force(tmp_path: Path) -> None:
    init(tmp_path)
    files = _gateway(tmp_path)
    before = files.context
    (tmp_path / "gateway.key").write_text("not a key")
    with capture_logs() as logs:
        assert not files.refresh()
    assert files.context is before
    (failed,) = [e for e in logs if e["event"] == "tls_reload_failed"]
    assert "gateway.key" in failed["error"] and "not a key" not in failed["error"]


def test_missing_files_are_named(tmp_path: Path) -> None:
    init(tmp_path)
    node_bundle(tmp_path, "laptop", tmp_path / "laptop")
    with pytest.raises(TlsError, match=r"laptop\.pem"):
        TlsFiles(tmp_path / "laptop.pem", tmp_path / "laptop.key", tmp_path / "ca.pem",
                 node_context)  # fmt: skip
