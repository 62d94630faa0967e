"""Shared pytest hooks, the end-to-end farm fixtures and the PostgreSQL ones.

The end-to-end tests start real `farmd` processes; when one fails, the stderr of each of
those processes is added to its report (see `tests.e2e_support.attach_process_logs`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.e2e_support import Farm, attach_process_logs, forget_farmd_env, open_farm

# PostgreSQL databases for the tests that need one (see tests.pg_support): imported here
# so that every test module can ask for them by name
from tests.pg_support import module_postgres_url, postgres_url  # noqa: F401


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_process_logs(item, report)
    return report


@pytest.fixture
def bare_farm(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Farm]:
    """A farm directory with nothing started yet; every process a test starts in it is
    stopped at the end, by pid."""
    forget_farmd_env(monkeypatch)
    with open_farm(tmp_path, request.node) as farm:
        yield farm


@pytest.fixture
def farm(bare_farm: Farm) -> Farm:
    """A farm whose supervisor (`farmd serve`) is listening; no workers yet."""
    bare_farm.serve()
    return bare_farm


@pytest.fixture
def web_farm(bare_farm: Farm) -> Farm:
    """A farm whose supervisor also serves its HTTP API and dashboard (on port 0)."""
    bare_farm.serve(http=True)
    return bare_farm


# Hypothesis profiles: `ci` (the default) keeps every property test bounded and
# derandomized, so CI replays the same examples; `--hypothesis-profile=long` explores
# for a local soak. Tests that set max_examples themselves keep their own numbers.
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=5_000, deadline=None)
settings.load_profile("ci")
