"""The package as a user installs it: a wheel built from the repository, in a fresh venv.

Nothing here may come from the source checkout: the wheel is installed (not editable) into a
new virtual environment and the command runs from an empty directory elsewhere, so the default
config and every module it needs must ship inside the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel built from this checkout installed in it; its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", ROOT,
                 cwd=work)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("booagent_cluster-*.whl")
    venv.create(work / "venv", with_pip=True)
    bin_dir = work / "venv" / "bin"
    pip = _run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=work)
    assert pip.returncode == 0, pip.stderr
    yield bin_dir


def test_the_installed_command_comes_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """``booagent --help`` runs from an empty directory and lists the commands, the plugins
    (bench, eval) included; the gateway it imports is the installed one."""
    helped = _run(installed / "booagent", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for command in ("up", "serve", "init", "models", "bench", "eval"):
        assert f"  {command}" in helped.stdout
    where = _run(installed / "python", "-c", "import gateway; print(gateway.__file__)",
                 cwd=tmp_path)  # fmt: skip
    assert str(installed.parent) in where.stdout and str(ROOT) not in where.stdout


def test_up_dry_run_reads_the_packaged_default_cluster(installed: Path, tmp_path: Path) -> None:
    """``booagent up --dry-run`` finds the default cluster inside the package and says what it
    would start."""
    dry = _run(installed / "booagent", "up", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "node coder-1.5b-1 [qwen2.5-coder-1.5b]:" in dry.stdout
    assert "-m llama_cpp.server" in dry.stdout
    assert "gateway: http://127.0.0.1:8100/v1" in dry.stdout


def test_init_writes_an_editable_copy_that_up_accepts(installed: Path, tmp_path: Path) -> None:
    written = _run(installed / "booagent", "init", "mine", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    config = tmp_path / "mine" / "cluster.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["server"]["port"] = 9911
    config.write_text(yaml.safe_dump(raw))
    dry = _run(installed / "booagent", "up", "--dry-run", "--config", config, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "gateway: http://127.0.0.1:9911/v1" in dry.stdout
    again = _run(installed / "booagent", "init", "mine", cwd=tmp_path)
    assert again.returncode != 0 and "--force" in again.stderr
