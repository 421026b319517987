"""Fixtures of the meetings tests: API helpers, and a client on committed transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.database import (
    Base,
    get_engine,
)
from {{ cookiecutter.package_name }}.main import app

from tests.harness import serve
from tests.meetings.api import Json, post


@pytest.fixture
async def room(client: httpx.AsyncClient) -> Json:
    """A room for four."""
    return await post(client, "/rooms", {"name": "Board room", "capacity": 4})


@pytest.fixture
async def transcript(client: httpx.AsyncClient, room: Json) -> Json:
    """A transcript being recorded in ``room``."""
    body = {"room_id": room["id"], "title": "Weekly sync", "language": "en"}
    return await post(client, "/transcripts", body)


@pytest.fixture
async def live_client(
    environ: pytest.MonkeyPatch,
    engine: AsyncEngine,
    backend: str,
    settings: Settings,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app on its own engine, where every request really commits.

    For concurrency tests, which the rolled-back single connection of ``client`` cannot
    show. SQLite uses a fresh database file (an in-memory database has one connection);
    PostgreSQL uses the run's database, emptied afterwards.
    """
    if backend == "sqlite":
        environ.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'live.db'}")
        async with get_engine().begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    else:
        environ.setenv("DATABASE_URL", settings.database_url.get_secret_value())
    try:
        async with serve(app) as client:
            yield client
    finally:
        if backend == "postgresql":
            tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
