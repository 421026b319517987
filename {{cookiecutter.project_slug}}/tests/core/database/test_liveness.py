"""Pooled PostgreSQL connections are checked before use, without a round trip per request."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import (
    Settings,
)
from {{ cookiecutter.package_name }}.core.database.engine import (
    engine_from_settings,
)
from {{ cookiecutter.package_name }}.core.unavailable import unavailable_cause

from tests.harness import settings_for, terminate_backends

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real pings (round trips) made at checkout."""
    made: list[int] = []
    original: Callable[[AsyncAdapt_asyncpg_connection], None] = AsyncAdapt_asyncpg_connection.ping

    def counting_ping(self: AsyncAdapt_asyncpg_connection) -> None:
        made.append(1)
        original(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counting_ping)
    return made


def service_engine(settings: Settings, ping_after: float) -> AsyncEngine:
    """An engine like the service's, with one pooled connection to the run's database."""
    url = settings.database_url.get_secret_value()
    return engine_from_settings(
        settings_for(url, database_pool_size=1, database_pool_ping_after=ping_after)
    )


async def kill_connection(service: AsyncEngine, admin: AsyncEngine) -> None:
    """Terminate the pooled connection of ``service``, as a database restart would."""
    async with service.connect() as connection:
        pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    await terminate_backends(admin, [pid])


async def select_one(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT 1")) or 0)


async def test_a_recently_used_connection_costs_no_ping(
    settings: Settings, pings: list[int]
) -> None:
    service = service_engine(settings, ping_after=30)
    try:
        for _ in range(5):
            assert await select_one(service) == 1
    finally:
        await service.dispose()
    assert pings == []


async def test_a_connection_idle_past_ping_after_is_pinged(
    settings: Settings, pings: list[int]
) -> None:
    service = service_engine(settings, ping_after=0)
    try:
        for _ in range(3):
            assert await select_one(service) == 1
    finally:
        await service.dispose()
    assert len(pings) == 3  # with ping_after=0, every checkout


async def test_a_ping_replaces_a_dead_connection_whose_close_went_unseen(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_engine(settings, ping_after=0)
    try:
        await kill_connection(service, engine)
        # As if the server's goodbye never arrived (a network that dropped it): only the
        # round trip can tell that the connection is dead.
        real_is_closed = asyncpg.Connection.is_closed
        seen: list[bool] = []

        def unseen_once(connection: asyncpg.Connection) -> bool:
            if not seen:  # the check at checkout
                seen.append(True)
                return False
            return bool(real_is_closed(connection))

        monkeypatch.setattr(asyncpg.Connection, "is_closed", unseen_once)
        assert await select_one(service) == 1
    finally:
        await service.dispose()
    assert seen == [True]


async def test_a_connection_the_server_closed_is_replaced_without_a_ping(
    settings: Settings, engine: AsyncEngine, pings: list[int]
) -> None:
    service = service_engine(settings, ping_after=30)
    try:
        await kill_connection(service, engine)
        assert await select_one(service) == 1
    finally:
        await service.dispose()
    assert pings == []


async def test_a_ping_that_gets_no_answer_fails_at_once_without_connecting_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_engine(settings, ping_after=0)
    connects: list[int] = []
    event.listen(service.sync_engine, "connect", lambda *_: connects.append(1))
    try:
        async with service.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None

        def unanswered(_self: AsyncAdapt_asyncpg_connection) -> None:
            raise TimeoutError  # as from a frozen server, once the client's limit ran out

        monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", unanswered)
        with pytest.raises(OperationalError) as raised:
            await select_one(service)
    finally:
        await service.dispose()
    # A 503 now: neither a polite close nor a new connection, each of which would wait again.
    assert unavailable_cause(raised.value) == "unreachable"
    assert driver.is_closed()
    assert connects == [1]
