"""Shared pytest hooks.

The end-to-end tests start real `farmd` processes; when one fails, the stderr of each of
those processes is added to its report (see `tests.e2e_support.attach_process_logs`).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.e2e_support import attach_process_logs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    attach_process_logs(item, report)
    return report
