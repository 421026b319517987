"""The service under load and faults: busy SQLite, lost connections, a full pool, no database.

Tests marked postgres_only need a server (TEST_DATABASE_URL); without one they are
deselected, and the summary line says so.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import (
    Settings,
    get_settings,
)
from {{ cookiecutter.package_name }}.core.database import (
    ReadSessionDep,
    SessionDep,
    dispose_engine,
    get_engine,
    session_scope,
)
from {{ cookiecutter.package_name }}.core.errors import ANSWERS
from {{ cookiecutter.package_name }}.main import (
    create_app,
)

from tests.harness import (
    eventually,
    postgres_server_url,
    run_autocommit,
    serve,
    terminate_backends,
)
from tests.models import Note

postgres_only = pytest.mark.postgres_only


@pytest.mark.slow
async def test_many_more_concurrent_writers_than_connections_all_land_on_sqlite(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environ.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'writes.db'}")
    async with get_engine().begin() as connection:
        await connection.run_sync(Note.metadata.create_all)

    async def write(number: int) -> None:
        async with session_scope() as session:
            session.add(Note(title=f"note {number}"))

    # 60 writers at once, four times the pool's 15 connections: they take turns.
    results = await asyncio.gather(*(write(n) for n in range(60)), return_exceptions=True)
    async with session_scope() as session:
        stored = set(await session.scalars(select(Note.title)))
    assert [error for error in results if error is not None] == []
    assert stored == {f"note {n}" for n in range(60)}


def app_with_a_slow_route() -> FastAPI:
    """The service, plus routes that hold a connection on the database for a while:
    /slow through a session that writes, /read through a read-only one."""
    application = create_app()

    @application.get("/read")
    async def read(session: ReadSessionDep, seconds: float = 0.0) -> dict[str, str]:
        if get_settings().sqlalchemy_url.get_backend_name() == "postgresql":
            await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
        else:
            await session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @application.get("/slow")
    async def slow(session: SessionDep, seconds: float = 0.0) -> dict[str, str]:
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
        else:
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(seconds)
        return {"status": "ok"}

    return application


@pytest.fixture
async def service(
    environ: pytest.MonkeyPatch, settings: Settings, engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """The service on the run's PostgreSQL database, with its own engine and a small pool.

    Its connections carry a unique application_name, so that tests can find them.
    """
    url = settings.sqlalchemy_url.set(password="hunter2-secret")  # trust auth ignores it
    environ.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    environ.setenv("APP_NAME", f"reliability-{uuid.uuid4().hex[:12]}")
    environ.setenv("DATABASE_POOL_SIZE", "3")
    environ.setenv("DATABASE_MAX_OVERFLOW", "2")
    environ.setenv("DATABASE_POOL_TIMEOUT", "0.5")
    async with serve(app_with_a_slow_route()) as client:
        yield client


async def service_backends(engine: AsyncEngine, application_name: str) -> list[int]:
    """The process ids of the service's connections to PostgreSQL."""
    async with engine.connect() as connection:
        pids = await connection.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )
        return list(pids)


async def terminate_service_backends(engine: AsyncEngine, application_name: str) -> list[int]:
    """Kill the service's connections as a database restart would; return their pids."""
    victims = await service_backends(engine, application_name)
    await terminate_backends(engine, victims)
    return victims


ROUTES = pytest.mark.parametrize("route", ["/slow", "/read"])


@postgres_only
@ROUTES
async def test_connections_killed_while_idle_are_replaced_unnoticed(
    service: httpx.AsyncClient, engine: AsyncEngine, route: str
) -> None:
    params = {"seconds": 0.05}  # long enough for the three requests to need three connections
    responses = await asyncio.gather(*(service.get(route, params=params) for _ in range(3)))
    assert [response.status_code for response in responses] == [200] * 3
    assert len(await terminate_service_backends(engine, os.environ["APP_NAME"])) == 3
    # Each pooled connection is dead; the pre-ping finds out before a request uses one.
    responses = await asyncio.gather(*(service.get(route) for _ in range(3)))
    assert [response.status_code for response in responses] == [200] * 3


@postgres_only
async def test_a_full_pool_answers_503_within_the_pool_timeout_then_recovers(
    service: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    holders = [asyncio.create_task(service.get("/slow", params={"seconds": 1.5})) for _ in range(5)]
    await asyncio.sleep(0.3)  # every connection of the pool (3 + 2 overflow) is now held
    started = time.perf_counter()
    refused = await service.get("/slow")
    waited = time.perf_counter() - started
    assert refused.status_code == 503
    assert refused.json() == {"detail": ANSWERS["pool exhausted"][0]}
    assert refused.headers["retry-after"] == "1"
    assert 0.4 < waited < 1.2  # the pool timeout, not a hang
    assert [response.status_code for response in await asyncio.gather(*holders)] == [200] * 5
    assert (await service.get("/slow")).status_code == 200
    assert "hunter2-secret" not in caplog.text + refused.text


@postgres_only
@ROUTES
async def test_killed_connections_fail_only_the_requests_in_flight(
    service: httpx.AsyncClient, engine: AsyncEngine, route: str
) -> None:
    name = os.environ["APP_NAME"]
    outcomes: list[tuple[float, int]] = []
    stop = asyncio.Event()

    async def client_loop() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            response = await service.get(route, params={"seconds": 0.01})
            outcomes.append((started, response.status_code))

    async def steady() -> bool:
        # Every client served a few times: the pool has opened its connections.
        return len(outcomes) >= 3 * 8

    loops = [asyncio.create_task(client_loop()) for _ in range(8)]
    await eventually(steady, "the clients are served")
    await eventually(lambda: service_backends(engine, name), "the service's connections show")
    victims = await terminate_service_backends(engine, name)
    killed_at = time.perf_counter()

    async def served_again() -> bool:
        # More requests after the kill than there are clients: every client got through.
        return sum(1 for started, _ in outcomes if started > killed_at) > 8

    await eventually(served_again, "the clients are served again after the kill")
    stop.set()
    await asyncio.gather(*loops)

    assert victims
    failed = [started for started, status in outcomes if status != 200]
    assert len(failed) <= 8  # at most one per client, each a request in flight
    assert all(started < killed_at for started in failed)

    # Back to at most the pool size: no connection leaked, dead or alive. (A backend whose
    # client has gone can take a moment to leave pg_stat_activity on a busy machine.)
    async def within_the_pool() -> bool:
        return len(await service_backends(engine, name)) <= 3

    await eventually(within_the_pool, "the service's connections fit its pool")


async def test_the_service_starts_without_its_database_and_recovers_when_it_appears(
    environ: pytest.MonkeyPatch, backend: str, tmp_path: Path
) -> None:
    server_url = postgres_server_url()
    folder = tmp_path / "not-yet"
    missing = f"later_{uuid.uuid4().hex[:12]}"
    if backend == "postgresql" and server_url is not None:
        environ.setenv("DATABASE_URL", server_url.set(database=missing).render_as_string(False))
    else:
        environ.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{folder / 'app.db'}")

    async def create_the_database() -> None:
        if backend == "postgresql" and server_url is not None:
            await run_autocommit(server_url, f'CREATE DATABASE "{missing}"')
        else:
            folder.mkdir()

    async with serve(app_with_a_slow_route()) as client:
        down = [await client.get(path) for path in ("/readyz", "/slow", "/read", "/livez")]
        await create_the_database()
        try:
            up = [await client.get(path) for path in ("/readyz", "/slow", "/read")]
        finally:
            await dispose_engine()
            if backend == "postgresql" and server_url is not None:
                await run_autocommit(
                    server_url, f'DROP DATABASE IF EXISTS "{missing}" WITH (FORCE)'
                )
    assert [response.status_code for response in down] == [503, 503, 503, 200]
    assert down[1].json() == down[2].json() == {"detail": ANSWERS["unreachable"][0]}
    assert [response.status_code for response in up] == [200, 200, 200]
