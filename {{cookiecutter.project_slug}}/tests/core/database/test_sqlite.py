"""SQLite through aiosqlite: one trip to the driver's thread per statement, same results."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from {{ cookiecutter.package_name }}.core.database import Base, create_engine
from {{ cookiecutter.package_name }}.core.database.sqlite import (
    PREFETCH_ROWS,
    OneTripConnection,
    OneTripCursor,
    connect,
)

from tests.harness import settings_for
from tests.models import Note

COUNT_TO = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :last) "
MANY = PREFETCH_ROWS * 2 + 500  # more than two prefetches


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every call sent to an aiosqlite thread while the test runs."""
    sent: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return sent


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a SQLite file with the test tables, whatever the backend under test."""
    engine = create_engine(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}"))
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


async def start_counting(connection: AsyncConnection, trips: list[str]) -> None:
    """Open the pool's connection and end its transaction, then forget the trips so far."""
    await connection.execute(text("SELECT 1"))
    await connection.rollback()
    trips.clear()


async def test_the_engine_connects_with_one_trip_connections(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert isinstance(raw.driver_connection, OneTripConnection)


async def test_a_select_costs_one_trip(sqlite_engine: AsyncEngine, trips: list[str]) -> None:
    async with sqlite_engine.connect() as connection:
        await start_counting(connection, trips)
        rows = (await connection.execute(text(COUNT_TO + "SELECT x FROM n"), {"last": 3})).all()
        assert [row.x for row in rows] == [1, 2, 3]
        assert len(trips) == 1  # SQLAlchemy's own adapter: cursor, execute, fetchall, close


async def test_begin_travels_with_the_first_statement_and_an_empty_transaction_is_free(
    sqlite_engine: AsyncEngine, trips: list[str]
) -> None:
    async with sqlite_engine.connect() as connection:
        await start_counting(connection, trips)
        async with connection.begin():
            pass
        transaction = await connection.begin()
        await transaction.rollback()
        assert trips == []  # nothing ran: no BEGIN, COMMIT or ROLLBACK was sent
        async with connection.begin():
            await connection.execute(insert(Note).values(title="one trip"))
        assert len(trips) == 2  # BEGIN with the INSERT, then COMMIT
        assert await connection.scalar(select(Note.title)) == "one trip"


async def test_begin_still_takes_the_write_lock_before_the_first_read(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lock.db'}"
    holder = create_engine(settings_for(url))
    waiter = create_engine(settings_for(url, database_sqlite_busy_timeout_ms=50))
    try:
        async with holder.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with holder.begin() as connection:
            await connection.execute(select(Note.id))  # a read: BEGIN IMMEDIATE went first
            with pytest.raises(OperationalError, match="database is locked"):
                async with waiter.begin() as blocked:
                    await blocked.execute(select(Note.id))
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_a_long_result_comes_back_whole(sqlite_engine: AsyncEngine, trips: list[str]) -> None:
    async with sqlite_engine.connect() as connection:
        await start_counting(connection, trips)
        result = await connection.execute(text(COUNT_TO + "SELECT x FROM n"), {"last": MANY})
        assert [row.x for row in result] == list(range(1, MANY + 1))
        assert len(trips) == 2  # the statement with its prefetch, then the rest at once


async def test_a_streamed_result_comes_back_whole(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.connect() as connection:
        stream = await connection.stream(text(COUNT_TO + "SELECT x FROM n"), {"last": MANY})
        seen = [row.x async for row in stream]
    assert seen == list(range(1, MANY + 1))


async def test_many_rows_are_inserted_in_one_executemany(sqlite_engine: AsyncEngine) -> None:
    async with sqlite_engine.begin() as connection:
        result = await connection.execute(insert(Note), [{"title": "a"}, {"title": "b"}])
        assert result.rowcount == 2
        titles = (await connection.scalars(select(Note.title).order_by(Note.title))).all()
    assert titles == ["a", "b"]


async def test_url_options_still_reach_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "read-only.db"
    sqlite3.connect(path).close()
    engine = create_engine(settings_for(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"))
    try:
        # mode=ro reached sqlite3: the first write (switching the file to WAL) is refused.
        with pytest.raises(OperationalError, match="readonly"):
            async with engine.connect() as connection:
                await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        await engine.dispose()


async def test_the_cursor_serves_rows_one_by_one_and_in_batches_across_prefetches() -> None:
    async with connect(":memory:") as database:
        cursor = await database.cursor()
        assert isinstance(cursor, OneTripCursor)
        await cursor.execute(COUNT_TO.replace(":last", "?") + "SELECT x FROM n", [MANY])
        assert cursor.description[0][0] == "x"
        first = [await cursor.fetchone() for _ in range(3)]
        batch = await cursor.fetchmany(PREFETCH_ROWS - 3)  # the rest of the first prefetch
        after = await cursor.fetchone()  # fetches the second
        more = await cursor.fetchmany(PREFETCH_ROWS)  # crosses into the third
        cursor.arraysize = 2
        pair = await cursor.fetchmany()
        rest = await cursor.fetchall()
        assert await cursor.fetchone() is None
        numbers = [row[0] for row in [*first, *batch, after, *more, *pair, *rest]]
        assert numbers == list(range(1, MANY + 1))


async def test_the_cursor_reports_rowcount_and_lastrowid_and_runs_scripts() -> None:
    async with connect(":memory:") as database:
        cursor = await database.cursor()
        await cursor.executescript("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        await cursor.execute("INSERT INTO t VALUES (?)", [2])
        assert cursor.lastrowid == 2
        await cursor.execute("UPDATE t SET x = x + 10")
        assert cursor.rowcount == 2
        await cursor.execute("SELECT x FROM t ORDER BY x")
        assert [row[0] for row in await cursor.fetchall()] == [11, 12]
        await cursor.close()


async def test_a_failed_statement_raises_and_leaves_the_connection_usable() -> None:
    async with connect(":memory:") as database:
        cursor = await database.cursor()
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await cursor.execute("SELECT * FROM missing")
        await cursor.execute("SELECT 42")
        assert await cursor.fetchone() == (42,)


async def test_closing_a_cursor_read_part_way_releases_the_table() -> None:
    async with connect(":memory:") as database:
        cursor = await database.cursor()
        await cursor.executescript(
            f"CREATE TABLE t (x INTEGER); {COUNT_TO.replace(':last', str(MANY))}"
            "INSERT INTO t SELECT x FROM n;"
        )
        await cursor.execute("SELECT x FROM t")
        assert len(list(await cursor.fetchmany(5))) == 5
        await cursor.close()
        # SQLite refuses to drop a table that a statement on this connection still reads.
        other = await database.cursor()
        await other.execute("DROP TABLE t")
        assert await (await other.execute("SELECT count(*) FROM sqlite_master")).fetchone() == (0,)
