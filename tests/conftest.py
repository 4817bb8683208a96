import gc
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Property tests judge behaviour, not speed (speed is measured by benchmarks): no per-example
# deadline, which a busy machine would otherwise turn into failures.
settings.register_profile("booagent", deadline=None)
settings.load_profile("booagent")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_SERVER_TESTS = ("tests/faults/", "tests/e2e/", "tests/bench/")


@pytest.fixture(autouse=True)
def _collect_leaks_in_their_own_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that run servers on loopback collect garbage as they finish, so a socket or
    transport one of them leaves unclosed fails that test (warnings are errors) instead of
    whichever later test the collector happens to run in."""
    yield
    if any(part in request.node.nodeid for part in _SERVER_TESTS):
        gc.collect()
