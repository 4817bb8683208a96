"""Settings of the strategies, as they appear under ``strategies:`` in the cluster config.

Thresholds here are fitted on the evaluation harness's dev split (``booagent eval``), not
guessed; the README's evaluation section says which run produced them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ensemble.base import StrategyName


class CascadeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Members from cheapest to strongest, per kind of request (``default`` for the rest).

    A step's answer is accepted when its cheap signal says so: valid Python for code, valid
    JSON for a JSON ``response_format``, valid tool-call arguments for tools; otherwise, on a
    member whose nodes give token log-probabilities at no extra cost (native llama-server),
    its mean token probability must reach ``confidence`` (when set); otherwise two samples of
    the step must agree at least ``agreement`` (word-bigram Jaccard, or equal short answers).
    The last step's answer is always accepted. Then an answer a checker faults (a
    broken checkable instruction, invalid JSON or code) is mended. With ``constrain``, when
    every instruction is of a form a grammar can enforce (:mod:`ensemble.shape`), the same
    request is asked once more under that grammar. Otherwise ``resample`` fresh samples of the
    request from its member (another seed, ``sample_temperature``), then with ``repair`` one
    request naming its faults. A try with fewer faults replaces the answer.
    """

    ladders: dict[str, tuple[str, ...]] = {}
    agreement: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    check_agreement: bool = True
    sample_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.8
    resample: Annotated[int, msgspec.Meta(ge=0, le=4)] = 0
    repair: bool = False
    constrain: bool = False


class EnsembleSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Members asked at once (``samples`` each, different seeds), combined at ``deadline_ms``;
    ``members_by_kind`` replaces ``members`` for a kind of request (e.g. ``structured``)."""

    members: tuple[str, ...] = ()
    members_by_kind: dict[str, tuple[str, ...]] = {}
    samples: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    deadline_ms: Annotated[int, msgspec.Meta(ge=100)] = 9000
    sample_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.8


class ProgramSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who writes programs for math requests (the first whose call succeeds; empty: every
    member in config order), the tokens a program may take when the request sets no
    ``max_tokens``, and the CPU and wall-clock seconds a program may run."""

    members: tuple[str, ...] = ()
    max_tokens: Annotated[int, msgspec.Meta(ge=16)] = 512
    cpu_seconds: Annotated[int, msgspec.Meta(ge=1, le=60)] = 2
    wall_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0


Mend = Literal["repair", "resample", "escalate"]


class TestedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Code requests answered by running the answer first (:mod:`ensemble.tested`).

    ``members`` write the code, the first asked first (empty: every member in config order);
    ``test_writer`` writes assertions when the request states no example (none: only stated
    examples are checked). An answer that fails its checks is mended in ``mend``'s order
    (``repair``: asked again with the failures shown; ``resample``: another sample;
    ``escalate``: the next writer), while a try still fits in ``deadline_ms`` (the request's
    ``booagent.deadline_ms`` wins), at most ``tries`` answers in all. With ``fit_writer`` the
    first writer asked is the first whose recent pace would answer ``expected_tokens`` (or the
    request's ``max_tokens``) within the deadline, else the fastest. With ``brief`` a request
    that asks for no explanation is asked for the code first and a short note after it. Each
    run of an answer's checks may take ``cpu_seconds`` of CPU and ``wall_seconds`` in all.
    """

    members: tuple[str, ...] = ()
    test_writer: str | None = None
    mend: tuple[Mend, ...] = ("repair", "escalate")
    tries: Annotated[int, msgspec.Meta(ge=1, le=8)] = 3
    deadline_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] = 10_000
    brief: bool = False
    fit_writer: bool = False
    expected_tokens: Annotated[int, msgspec.Meta(ge=1)] = 300
    test_tokens: Annotated[int, msgspec.Meta(ge=32)] = 256
    cpu_seconds: Annotated[int, msgspec.Meta(ge=1, le=60)] = 2
    wall_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0


class ToolSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a turn offers more than ``select_above`` tools with ``tool_choice`` auto, only the
    ``keep`` tools its words point to (and those the conversation already called) are sent
    (:mod:`ensemble.tool_select`); 0 sends every tool always."""

    select_above: Annotated[int, msgspec.Meta(ge=0)] = 8
    keep: Annotated[int, msgspec.Meta(ge=1)] = 4


class StrategySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``default`` serves the bare virtual model; ``auto`` maps a kind of request to a strategy."""

    default: StrategyName = "auto"
    auto: dict[str, StrategyName] = {}
    cascade: CascadeSettings = CascadeSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    program: ProgramSettings = ProgramSettings()
    tested: TestedSettings = TestedSettings()
    tools: ToolSettings = ToolSettings()
    keepalive_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
