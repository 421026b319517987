"""Building blocks of the test harness, shared by conftest.py and the tests that check it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.core.config import Settings, normalise_database_url

MEMORY_URL = "sqlite+aiosqlite:///:memory:"


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings for ``database_url`` that ignore any local .env file."""
    return Settings(database_url=database_url, _env_file=None, **overrides)


def postgres_server_url() -> URL | None:
    """The PostgreSQL server named by TEST_DATABASE_URL, or None (unset) to test on SQLite."""
    raw = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not raw:
        return None
    url = make_url(normalise_database_url(raw, "TEST_DATABASE_URL"))
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            "TEST_DATABASE_URL must name a PostgreSQL server; unset it to test on SQLite"
        )
    return url


async def run_autocommit(server_url: URL, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@asynccontextmanager
async def temporary_database(server_url: URL) -> AsyncIterator[URL]:
    """Create a uniquely named PostgreSQL database on ``server_url``; drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await run_autocommit(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield server_url.set(database=name)
    finally:
        await run_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def rolled_back(connection: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """``connection`` inside a transaction that is rolled back at the end, whatever happened."""
    transaction = await connection.begin()
    try:
        yield connection
    finally:
        if transaction.is_active:
            await transaction.rollback()


@asynccontextmanager
async def rolled_back_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A new connection of ``engine`` inside a transaction rolled back at the end."""
    async with engine.connect() as connection, rolled_back(connection):
        yield connection


def savepoint_sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``connection`` whose commits and rollbacks only touch a SAVEPOINT."""
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` with its lifespan entered, as a real server would run it."""
    # ASGITransport does not run the lifespan, so enter it here. raise_app_exceptions=False
    # lets an unhandled error reach the client as the 500 a real server would send.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served over HTTP by uvicorn on this event loop; yields its base URL.

    For what only a real server shows: keep-alive connections, and the bytes on the wire.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped the server
                await asyncio.sleep(0.01)
            host, port = listener.getsockname()
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
            await task


T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], what: str) -> T:
    """Poll ``check`` until it returns something true, and return that; fail after a minute.
    Tests wait for the event, not the clock: a busy machine is slow, not wrong."""
    deadline = time.monotonic() + 60
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within 60 s (last: {result!r})")
        await asyncio.sleep(0.01)
    return result


async def terminate_backends(admin: AsyncEngine, pids: list[int]) -> None:
    """Kill PostgreSQL backends as a database restart would, and wait until they are gone."""
    async with admin.connect() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
            {"pids": pids},
        )
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:pids AS int[]))")

    async def gone() -> bool:
        # A new transaction each time: pg_stat_activity is a snapshot per transaction.
        async with admin.connect() as connection:
            return not await connection.scalar(alive, {"pids": pids})

    await eventually(gone, f"the terminated backends {pids} leave pg_stat_activity")
    # A moment later, as for any request after a restart: the event loop has read the
    # server's goodbye and the end of the socket.
    await asyncio.sleep(0.05)


async def in_transaction(bind: AsyncSession | AsyncConnection) -> bool:
    """Whether the driver connection under ``bind`` is inside a transaction now."""
    connection = await bind.connection() if isinstance(bind, AsyncSession) else bind
    raw: Any = (await connection.get_raw_connection()).driver_connection
    return bool(
        raw.is_in_transaction() if hasattr(raw, "is_in_transaction") else raw.in_transaction
    )
