"""SQLite through aiosqlite, made to behave like a transactional database that many
writers can share."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

# How long SQLite itself waits for another process's writer before the service's writer tries
# again from the event loop (WriteTurns). Its own backoff stays short this early: it sleeps
# 1, 2, 5 and 10 ms between tries, against up to 100 ms once it has waited 200 ms.
BUSY_SLICE_MS = 10


def in_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (one connection, shared)."""
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def configure_sqlite(
    engine: AsyncEngine, *, busy_timeout_ms: int, foreign_keys: bool, file_database: bool
) -> None:
    """Real transactions, foreign keys, and for files WAL and a busy timeout.

    pysqlite/aiosqlite never emit BEGIN before a SELECT, so a test that commits inside a
    SAVEPOINT leaks rows, and a failed migration is not rolled back. Turning the driver's own
    transaction handling off and emitting BEGIN here fixes both; BEGIN IMMEDIATE takes the
    write lock up front, so concurrent read-then-write transactions wait for each other (up
    to the busy timeout) instead of failing with "database is locked".
    https://docs.sqlalchemy.org/en/21/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        if file_database:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Read-only sessions run in autocommit: each SELECT is its own transaction, and in
        # WAL mode readers never wait for the writer.
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN IMMEDIATE")


class WriteTurns:
    """The writers of one process take turns on a SQLite file, in the order they came, and
    the one whose turn it is retries SQLite's write lock at short intervals.

    SQLite lets one writer in at a time. A writer that finds the lock taken sleeps in the
    driver's thread with a backoff of up to 100 ms a try (SQLite's busy handler), so under
    many writers some waited far longer than the lock was held, and past the busy timeout
    failed with "database is locked". Queued here instead, each starts the moment the one
    before commits; waiting for another process, it tries again every few milliseconds
    until DATABASE_SQLITE_BUSY_TIMEOUT_MS has passed.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()

    @classmethod
    def for_engine(cls, engine: AsyncEngine, busy_timeout_ms: int) -> WriteTurns | None:
        """Turns for ``engine`` if it is a SQLite file; None for any other database."""
        if engine.dialect.name != "sqlite" or in_memory(engine.url):
            return None
        return cls(busy_timeout_ms / 1000)

    @asynccontextmanager
    async def turn(self, session: AsyncSession) -> AsyncIterator[None]:
        """Wait for this process's turn, then begin ``session``'s transaction with the write
        lock held (BEGIN IMMEDIATE), all within the busy timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            locked = sqlite3.OperationalError("database is locked")
            locked.sqlite_errorname = "SQLITE_BUSY"
            raise OperationalError("BEGIN IMMEDIATE", None, locked) from None
        try:
            while True:
                try:
                    await session.connection()  # BEGIN IMMEDIATE, waiting BUSY_SLICE_MS at most
                    break
                except OperationalError as error:
                    busy = getattr(error.orig, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                    if not busy or loop.time() >= deadline:
                        raise
                    await session.rollback()  # gives the connection back meanwhile
            yield
        finally:
            self._lock.release()
