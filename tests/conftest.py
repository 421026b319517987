"""Shared fixtures of the template's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import (
    DEFAULT_POSTGRES_URL,
    REPO_ROOT,
    PostgresServer,
    clean_env,
    run,
)

__all__ = ["REPO_ROOT", "PostgresServer", "clean_env", "run"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow tests first: with tests spread over workers, the longest ones started
    last would leave one worker busy long after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The PostgreSQL server; skipped when none answers, a failure if REQUIRE_POSTGRES is set."""
    server = PostgresServer(make_url(os.environ.get("TEMPLATE_POSTGRES_URL", DEFAULT_POSTGRES_URL)))
    try:
        server.execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        reason = f"PostgreSQL at {server.url} is not reachable: {error!r}"
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(f"{reason} (REQUIRE_POSTGRES is set)", pytrace=False)
        pytest.skip(reason)
    return server


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, uniquely named database, dropped after the test; yields its asyncpg URL."""
    name = postgres.create_database()
    try:
        yield postgres.async_url(name)
    finally:
        postgres.drop_database(name)
