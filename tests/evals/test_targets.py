"""Tests for evals.command.resolve_targets: which listed models a run covers."""

from __future__ import annotations

import pytest

from evals.command import EvalError, resolve_targets

LISTED = ["booagent-cluster", "booagent-cluster:route", "booagent-cluster:cascade", "small", "big"]


class TestResolveTargets:
    """Strategies by full name, suffix or ``auto``; members by name; ``all`` for a group."""

    def test_default_is_everything_listed(self) -> None:
        assert resolve_targets(LISTED, [], []) == LISTED

    def test_members_only(self) -> None:
        assert resolve_targets(LISTED, [], ["big", "small"]) == ["big", "small"]

    def test_strategies_by_suffix_full_name_and_auto(self) -> None:
        chosen = resolve_targets(LISTED, ["cascade", "booagent-cluster:route", "auto"], [])
        assert chosen == ["booagent-cluster:cascade", "booagent-cluster:route", "booagent-cluster"]

    def test_all(self) -> None:
        assert resolve_targets(LISTED, ["all"], ["all"]) == LISTED

    def test_unknown_names_are_errors_that_list_the_choices(self) -> None:
        with pytest.raises(EvalError, match=r"unknown strategy 'ensemble'.*cascade"):
            resolve_targets(LISTED, ["ensemble"], [])
        with pytest.raises(EvalError, match="unknown member 'huge'; the gateway lists small, big"):
            resolve_targets(LISTED, [], ["huge"])
