"""SQLite through aiosqlite, made transactional, and shared by many writers."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

BUSY_SLICE_MS = 3  # SQLite's own wait, while its backoff is short (1, 2 ms; later 100)
SHARE_AFTER = 0.1  # seconds of this process's writers back to back before others get a turn
SHARE_PAUSE, SHARED_FOR = 0.02, 10.0  # the turn given, while another process wrote that lately


def configure_sqlite(engine: AsyncEngine, busy_ms: int, migrating: bool, memory: bool) -> None:
    """Real transactions (BEGIN here, as SQLAlchemy's SQLite docs advise: the driver's skips
    SELECTs; IMMEDIATE takes the write lock first), foreign keys, WAL, busy timeout."""
    busy_ms = busy_ms if migrating else min(busy_ms, BUSY_SLICE_MS)  # see WriteTurns

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(driver: Any, _record: Any) -> None:
        driver.isolation_level = None
        pragmas = [f"foreign_keys = {'OFF' if migrating else 'ON'}", f"busy_timeout = {busy_ms}"]
        pragmas += [] if memory else ["journal_mode = WAL", "synchronous = NORMAL"]
        driver.run_async(lambda c: c.executescript("".join(f"PRAGMA {p};" for p in pragmas)))

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:  # a Connection, whose driver's run_async is not typed
        # Reads run in autocommit: in WAL mode they never wait for the writer. A write's BEGIN
        # takes one trip to the driver's thread; exec_driver_sql's takes three (cursor, close).
        try:
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.connection.dbapi_connection.run_async(lambda c: c.execute("BEGIN IMMEDIATE"))
        except sqlite3.OperationalError as error:  # raised as exec_driver_sql would raise it
            raise OperationalError("BEGIN IMMEDIATE", None, error) from None


class WriteTurns:
    """A process's writers take turns on a SQLite file, first come, first served (SQLite's
    backoff waits up to 100 ms a try); only the one whose turn it is meets other processes'."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self.waiting = 0  # writers of this process waiting for their turn
        self._busy_since: float | None = None  # since they have had the lock back to back
        self._others_seen = -SHARED_FOR  # when another process last held the lock

    @asynccontextmanager
    async def turn(self, session: AsyncSession) -> AsyncIterator[None]:
        """This process's turn, then the write lock (BEGIN IMMEDIATE), within the timeout."""
        loop = asyncio.get_running_loop()
        deadline, self.waiting = loop.time() + self.timeout, self.waiting + 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            locked = sqlite3.OperationalError("database is locked")
            locked.sqlite_errorname = "SQLITE_BUSY"
            raise OperationalError("BEGIN IMMEDIATE", None, locked) from None
        finally:
            self.waiting -= 1
        try:
            if self._busy_since is None:
                self._busy_since = loop.time()
            elif loop.time() - self._busy_since > SHARE_AFTER:  # let other processes in, for
                shared = loop.time() - self._others_seen < SHARED_FOR  # longer if they write
                await asyncio.sleep(SHARE_PAUSE if shared else BUSY_SLICE_MS / 1000)
                self._busy_since = loop.time()
            while True:
                try:
                    await session.connection()  # BEGIN IMMEDIATE, waiting BUSY_SLICE_MS at most
                    break
                except OperationalError as error:
                    busy = getattr(error.orig, "sqlite_errorname", "").startswith("SQLITE_BUSY")
                    if not busy or loop.time() >= deadline:
                        raise
                    self._others_seen = loop.time()
                    await session.rollback()  # gives the connection back meanwhile
            yield
        finally:
            self._busy_since = self._busy_since if self.waiting else None
            self._lock.release()
