"""SQLite through aiosqlite, made to behave like a transactional database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine


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
