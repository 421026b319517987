"""The test run: which database it tests, which tests it runs first; the fixtures are in
fixtures.py.

Tests run on in-memory SQLite by default. With TEST_DATABASE_URL pointing at a PostgreSQL
server they run there instead, in a uniquely named database created for the run and dropped
after it.

This file imports nothing of the service. The controller of a parallel run (pytest-xdist)
loads it but runs no test: without the app to import (2 s under coverage) it starts its
workers sooner.
"""

from __future__ import annotations

import os

import pytest
from xdist import is_xdist_controller


def on_postgres() -> bool:
    """Whether this run tests on PostgreSQL (TEST_DATABASE_URL) rather than on SQLite."""
    return bool(os.environ.get("TEST_DATABASE_URL", "").strip())


@pytest.hookimpl(trylast=True)  # after pytest-cov has started measuring this process
def pytest_sessionstart(session: pytest.Session) -> None:
    """Load the fixtures in the processes that run tests, or that list fixtures."""
    option = session.config.option
    if not is_xdist_controller(session) or option.showfixtures or option.show_fixtures_per_test:
        session.config.pluginmanager.import_plugin("tests.fixtures")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the postgres_only tests when the run is on SQLite; put the slow ones first.

    Started first, the few tests that take seconds run beside the many quick ones instead of
    leaving one parallel worker busy at the end while the others wait.
    """
    if not on_postgres():
        deselected = [item for item in items if item.get_closest_marker("postgres_only")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if item not in deselected]
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which database the run used, and what a run on SQLite leaves out."""
    if on_postgres():
        terminalreporter.write_line("database: PostgreSQL (TEST_DATABASE_URL); every test ran")
    else:
        terminalreporter.write_line(
            "database: in-memory SQLite; tests marked postgres_only were deselected "
            "(set TEST_DATABASE_URL to a PostgreSQL server to run them too)"
        )
