"""Tests for backends.filewatch: files seen again when they change."""

from __future__ import annotations

import os
from pathlib import Path

from backends.filewatch import Watched


def test_a_rewrite_a_rename_over_and_a_removal_are_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("a")
    files = Watched(path)
    assert not files.changed()
    path.write_text("bb")
    assert files.changed() and not files.changed(), "seen once, then not again"
    fresh = tmp_path / "new.yaml"
    fresh.write_text("cc")  # same size, new inode
    os.replace(fresh, path)
    assert files.changed()
    path.unlink()
    assert files.changed() and not files.changed()


def test_seen_takes_the_files_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_text("a")
    files = Watched(path)
    path.write_text("bbb")
    files.seen()
    assert not files.changed()
