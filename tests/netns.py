"""Fixtures for tests on simulated machines (the harness is :mod:`bench.netns`, shared with
the benchmarks that run on it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.netns import Lan, Machine, require_netns, wait_for_tcp
from bench.netns_cleanup import Removed, sweep

__all__ = [
    "Lan",
    "Machine",
    "lan_fixture",
    "make_lan_fixture",
    "netns_sweep_fixture",
    "wait_for_tcp",
]


@pytest.fixture(scope="session", autouse=True, name="netns_sweep")
def netns_sweep_fixture() -> list[Removed]:
    """Before the first test that uses the harness: fail with a clear message where LANs
    cannot be built, then remove what crashed earlier runs left (returned, for the record)."""
    require_netns()
    return sweep()


@pytest.fixture(name="lan")
def lan_fixture() -> Iterator[Lan]:
    """An open ``Lan``, closed after the test whatever its outcome."""
    with Lan() as lan:
        yield lan


@pytest.fixture(name="make_lan")
def make_lan_fixture() -> Iterator[Callable[..., Lan]]:
    """A factory of open LANs (``make_lan(grace=0.5)``), all closed after the test."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: Any) -> Lan:
            return stack.enter_context(Lan(**kwargs))

        yield make
