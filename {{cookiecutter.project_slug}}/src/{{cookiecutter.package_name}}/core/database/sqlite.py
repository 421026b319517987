"""SQLite through aiosqlite: real transactions, and one trip to the driver's thread per statement.

aiosqlite runs each SQLite call in a thread of its own, so the event loop never waits on the
disk. Each call is a round trip between two threads, about 0.1 ms on a small virtual machine,
more than SQLite needs to run a simple statement. SQLAlchemy's adapter makes four of them per
SELECT (open a cursor, execute, fetch, close) and three per INSERT, UPDATE or SAVEPOINT. The
connection class here runs a statement and fetches its first rows in a single trip.

It builds on two internals of aiosqlite, ``Connection._execute`` (run a function on the
thread) and ``Connection._conn`` (the sqlite3 connection), which is why aiosqlite is pinned to
one minor version; tests/core/database/test_sqlite.py fails if they change.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import aiosqlite
from aiosqlite.context import contextmanager
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Settings

# Rows fetched in the trip that runs a statement. SQLAlchemy reads a whole result at once
# (streamed results excepted), so a result up to this size costs one trip. Streaming, it is
# also the most rows held at a time: SQLAlchemy's own buffer for streamed results is 1,000.
PREFETCH_ROWS = 1000


def is_sqlite_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


class OneTripCursor(aiosqlite.Cursor):
    """An aiosqlite cursor that executes and prefetches in one trip to the driver's thread.

    It is created without a trip; the sqlite3 cursor is made by the first ``execute``. When a
    result ends within the prefetch, the fetch and the close that follow cost nothing; a
    longer one fetches the rest, or closes, in one more trip.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        # Not super().__init__(), which takes a sqlite3 cursor: that is made on the driver's
        # thread by the first statement (sqlite3 objects belong to the thread that made them),
        # and aiosqlite.Cursor's properties (rowcount, description, ...) read it from then on.
        self.iter_chunk_size = connection._iter_chunk_size
        self._conn = connection
        self._started = False
        self._rows: deque[Any] = deque()
        self._more = False  # the statement may have rows not fetched yet

    def _run(self, method: str, *args: Any) -> list[Any]:
        """On the driver's thread: run ``method`` of the sqlite3 cursor, then prefetch."""
        if not self._started:
            self._cursor = self._conn._conn.cursor()
            self._started = True
        getattr(self._cursor, method)(*args)
        if self._cursor.description is None:  # no rows: INSERT, UPDATE, BEGIN, ...
            return []
        return self._prefetch()

    def _prefetch(self) -> list[Any]:
        # A statement read to its end is reset by sqlite3 itself: it holds no lock any more,
        # and close() has nothing left to do.
        return self._cursor.fetchmany(PREFETCH_ROWS)

    async def _on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the driver's thread: one trip."""
        return await self._conn._execute(function, *args)  # type: ignore[no-untyped-call]

    async def _start(self, method: str, *args: Any) -> None:
        rows = await self._on_thread(self._run, method, *args)
        self._rows = deque(rows)
        self._more = len(rows) == PREFETCH_ROWS

    async def _fetch_more(self) -> None:
        rows = await self._on_thread(self._prefetch)
        self._rows.extend(rows)
        self._more = len(rows) == PREFETCH_ROWS

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> OneTripCursor:
        await self._start("execute", sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> OneTripCursor:
        await self._start("executemany", sql, parameters)
        return self

    async def executescript(self, sql_script: str) -> OneTripCursor:
        await self._start("executescript", sql_script)
        return self

    async def fetchone(self) -> Any:
        if not self._rows and self._more:
            await self._fetch_more()
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        while len(self._rows) < size and self._more:
            await self._fetch_more()
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        if self._more:
            rows.extend(await self._on_thread(self._cursor.fetchall))
            self._more = False
        return rows

    async def close(self) -> None:
        self._rows.clear()
        if self._more:
            # A statement stopped part-way holds SQLite's read lock until it is closed.
            self._more = False
            await self._on_thread(self._cursor.close)


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors are :class:`OneTripCursor`, and whose BEGIN
    travels with the transaction's first statement.

    Nothing can happen in a transaction before its first statement, so sending BEGIN then
    changes nothing but the trip it saves; a transaction that runs no statement at all
    costs no trip, and its COMMIT or ROLLBACK none either.
    """

    _begin: str | None = None  # the BEGIN to send before the next call on the thread

    def begin_with_next_statement(self, begin: str) -> None:
        """Send ``begin`` on the thread just before whatever runs there next."""
        self._begin = begin

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        begin, self._begin = self._begin, None
        if begin is None:
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

        def begin_then_call() -> Any:
            self._conn.execute(begin)
            return fn(*args, **kwargs)

        return await super()._execute(begin_then_call)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        if self._begin is None:
            await super().commit()
        self._begin = None  # a transaction that never started has nothing to commit

    async def rollback(self) -> None:
        if self._begin is None:
            await super().rollback()
        self._begin = None

    async def close(self) -> None:
        self._begin = None
        await super().close()

    @contextmanager
    async def cursor(self) -> aiosqlite.Cursor:
        return OneTripCursor(self)


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> OneTripConnection:
    """``aiosqlite.connect`` with one-trip cursors; ``kwargs`` go to ``sqlite3.connect``."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    connection = OneTripConnection(connector, iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does: an undisposed engine can't hang exit
    return connection


def configure_sqlite(
    engine: AsyncEngine, settings: Settings, *, foreign_keys: bool, file_database: bool
) -> None:
    """Make SQLite behave: real transactions, foreign keys, WAL and a busy timeout.

    pysqlite/aiosqlite never emit BEGIN before a SELECT, so a test that commits inside a
    SAVEPOINT leaks rows, and a failed migration is not rolled back. Turning the driver's own
    transaction handling off and emitting BEGIN ourselves fixes both; BEGIN IMMEDIATE takes
    the write lock up front, so concurrent read-then-write transactions wait for each other
    (up to the busy timeout) instead of failing with "database is locked".
    https://docs.sqlalchemy.org/en/21/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _one_trip(_dialect: Any, _record: Any, _cargs: list[Any], cparams: dict[str, Any]) -> None:
        # SQLAlchemy's aiosqlite adapter calls this in place of aiosqlite.connect, with the
        # arguments it made from the URL (the mechanism behind create_async_engine's
        # async_creator).
        cparams["async_creator_fn"] = connect

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout = {settings.database_sqlite_busy_timeout_ms}")
        if file_database:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Read-only sessions run in autocommit: each SELECT is its own transaction, and in
        # WAL mode readers never wait for the writer.
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            driver = cast(OneTripConnection, connection.connection.driver_connection)
            driver.begin_with_next_statement("BEGIN IMMEDIATE")


__all__ = ["OneTripConnection", "OneTripCursor", "configure_sqlite", "connect", "is_sqlite_memory"]
