"""The fixtures of every test: one engine per run, and each test in a transaction rolled
back at its end. conftest.py loads them in the processes that run tests.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    close_all_sessions,
)

from {{ cookiecutter.package_name }}.core.config import Settings, get_settings
from {{ cookiecutter.package_name }}.core.database import (
    Base,
    dispose_engine,
    session_scope,
)
from {{ cookiecutter.package_name }}.core.database.engine import (
    engine_from_settings,
)
from {{ cookiecutter.package_name }}.core.database.session import (
    get_read_session,
    get_session,
    read_only_sessionmaker,
)
from {{ cookiecutter.package_name }}.main import app

from tests import models  # noqa: F401 - registers the test tables on Base.metadata
from tests.harness import (
    MEMORY_URL,
    postgres_server_url,
    rolled_back,
    savepoint_sessionmaker,
    serve,
    settings_for,
    temporary_database,
)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """The database of this run: in-memory SQLite, or a fresh PostgreSQL database."""
    server_url = postgres_server_url()
    if server_url is None:
        yield MEMORY_URL
        return
    async with temporary_database(server_url) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """Settings for the run's database, ignoring any local .env file."""
    return settings_for(database_url)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The one engine of the run, with every table created."""
    engine = engine_from_settings(settings)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
    await engine.dispose()


@pytest.fixture
async def empty_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, on the backend under test."""
    server_url = postgres_server_url()
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    async with temporary_database(server_url) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def shared_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection for the whole run; each test takes it in a transaction of its own."""
    async with engine.connect() as connection:
        yield connection


@pytest.fixture
async def environ(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[pytest.MonkeyPatch]:
    """``monkeypatch`` for environment variables that the service's cached settings and
    engine then read afresh: both caches are emptied before and after the test."""
    get_settings.cache_clear()
    await dispose_engine()
    yield monkeypatch
    await dispose_engine()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
async def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every table and no rows, made once: tests start from copies."""
    path = tmp_path_factory.mktemp("schema") / "schema.db"
    file_engine = engine_from_settings(settings_for(f"sqlite+aiosqlite:///{path}"))
    async with file_engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await file_engine.dispose()
    return path


@pytest.fixture
async def committed_database(
    environ: pytest.MonkeyPatch,
    engine: AsyncEngine,
    settings: Settings,
    sqlite_schema: Path,
    tmp_path: Path,
) -> AsyncIterator[str]:
    """DATABASE_URL set to a database where commits really happen; yields the URL.

    For tests of concurrency and of the service's own engine, which the rolled-back single
    connection of the other fixtures cannot show. SQLite: a fresh file with every table (an
    in-memory database has one connection). PostgreSQL: the run's database, emptied after.
    """
    if engine.dialect.name == "sqlite":
        url = f"sqlite+aiosqlite:///{shutil.copy(sqlite_schema, tmp_path / 'committed.db')}"
    else:
        url = settings.database_url.get_secret_value()
    environ.setenv("DATABASE_URL", url)
    try:
        yield url
    finally:
        await dispose_engine()
        if engine.dialect.name == "postgresql":
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
def backend(engine: AsyncEngine) -> str:
    """The name of the database under test: "sqlite" or "postgresql"."""
    return engine.dialect.name


@pytest.fixture
async def connection(
    shared_connection: AsyncConnection,
) -> AsyncIterator[AsyncConnection]:
    """This test's connection; everything it does, commits included, is rolled back."""
    async with rolled_back(shared_connection) as connection:
        yield connection
    # Then close every session still open, which by now means this test's (the ``session``
    # fixture's among them). Their SAVEPOINTs ended with the transaction: closing sends nothing.
    await close_all_sessions()


@pytest.fixture
def session_factory(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions bound to this test's connection (their commits release a SAVEPOINT)."""
    return savepoint_sessionmaker(connection)


@pytest.fixture
def session(session_factory: async_sessionmaker[AsyncSession]) -> AsyncSession:
    """A session inside this test's transaction; the ``connection`` fixture closes it.

    A plain fixture, not an async one: pytest-asyncio runs each async fixture's set-up and
    tear-down on the event loop as a task of its own, which costs more than the session.
    """
    return session_factory()


@pytest.fixture
async def client(
    connection: AsyncConnection, session_factory: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, its lifespan entered and its sessions in this test's
    transaction (committed through the same ``session_scope`` as in production)."""

    async def test_session() -> AsyncIterator[AsyncSession]:
        async with session_scope(session_factory) as session:
            yield session

    async def test_read_session() -> AsyncIterator[AsyncSession]:
        async with read_only_sessionmaker(connection)() as session:
            yield session

    app.dependency_overrides[get_session] = test_session
    app.dependency_overrides[get_read_session] = test_read_session
    try:
        async with serve(app) as client:
            yield client
    finally:
        app.dependency_overrides.clear()
