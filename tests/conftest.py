"""Shared fixtures of the template's tests."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import (
    DEFAULT_POSTGRES_URL,
    HOST_PYTHON,
    OPTIONS,
    POSTGRES_BIN,
    REPO_ROOT,
    HostCookies,
    PgBouncer,
    PostgresServer,
    PrimaryWithReplica,
    ReplicationError,
    clean_env,
    find_pgbouncer,
    run,
    skip_or_fail,
)

__all__ = ["REPO_ROOT", "PostgresServer", "clean_env", "run"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow tests first: with tests spread over workers, the longest ones started
    last would leave one worker busy long after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def host_cookies(cookies_session: Any) -> HostCookies:
    if HOST_PYTHON not in OPTIONS["python_version"]:
        pytest.fail(f"the tests run on Python {HOST_PYTHON}, which no bake offers", pytrace=False)
    return HostCookies(cookies_session)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The PostgreSQL server; skipped when none answers, a failure if REQUIRE_POSTGRES is set."""
    server = PostgresServer(make_url(os.environ.get("TEMPLATE_POSTGRES_URL", DEFAULT_POSTGRES_URL)))
    try:
        server.execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        skip_or_fail(f"PostgreSQL at {server.url} is not reachable: {error!r}")
    return server


@pytest.fixture
def postgres_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, uniquely named database, dropped after the test; yields its asyncpg URL."""
    name = postgres.create_database()
    try:
        yield postgres.async_url(name)
    finally:
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction pooling mode in front of the test server; required where
    PostgreSQL is."""
    binary = find_pgbouncer()
    if binary is None:
        skip_or_fail("pgbouncer is not installed (apt-get install pgbouncer)")
    # Not under pytest's private temporary folder: PgBouncer runs as the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    bouncer = PgBouncer(postgres.url, folder, binary)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def servers() -> Iterator[PrimaryWithReplica]:
    """A primary and its streaming replica for a module; skipped without the binaries."""
    if not (POSTGRES_BIN / "pg_basebackup").exists() or shutil.which("runuser") is None:
        skip_or_fail(f"PostgreSQL's server binaries (and runuser) are needed: {POSTGRES_BIN}")
    pair = PrimaryWithReplica()
    try:
        pair.start()
    except ReplicationError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def migrated_project(
    host_cookies: HostCookies, postgres: PostgresServer
) -> Iterator[tuple[Path, str]]:
    """A PostgreSQL bake with the meetings domain, migrated in a database of its own."""
    result = host_cookies.bake(extra_context={"database": "postgresql"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    database = postgres.create_database()
    try:
        run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=project,
            env=clean_env(DATABASE_URL=postgres.async_url(database)),
        )
        yield project, database
    finally:
        postgres.drop_database(database)
