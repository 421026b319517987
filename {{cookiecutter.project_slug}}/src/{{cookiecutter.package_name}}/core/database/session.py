"""The service's database, built once per process, and its sessions: SessionDep writes,
ReadSessionDep reads (from a replica when one is up)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Result, event
from sqlalchemy.exc import InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from ..config import Settings, get_settings
from .engine import engine_from_settings, unavailable_cause
from .replicas import ReadRouter, Replica
from .sqlite import WriteTurns

logger = logging.getLogger(__name__)


@dataclass
class Database:
    """What the service builds from its settings, once per process: the engines, the
    session factories, the read router and, on a SQLite file, its writers' turns."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reads: async_sessionmaker[AsyncSession]  # read-only, on the primary
    router: ReadRouter | None = None  # None: every read goes to the primary
    write_turns: WriteTurns | None = None  # SQLite files only
    storage_full: bool = False  # the last write failed for want of space (/readyz says so)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        engine = engine_from_settings(settings)
        if settings.database_read_url is not None and not settings.read_urls:
            logger.warning("DATABASE_READ_URL is ignored: DATABASE_URL is not PostgreSQL")
        replicas = [
            Replica(
                f"{url.host}:{url.port or 5432}/{url.database}",
                engine_from_settings(settings, url=url),
            )
            for url in settings.read_urls
        ]
        return cls(
            engine,
            async_sessionmaker(engine, expire_on_commit=False),
            read_only_sessionmaker(read_bind(engine, settings)),
            ReadRouter(engine, replicas, settings.database_read_max_lag) if replicas else None,
            WriteTurns.for_engine(engine, settings.database_sqlite_busy_timeout_ms),
        )

    async def dispose(self) -> None:
        for replica in self.router.replicas if self.router is not None else []:
            await replica.engine.dispose()
        await self.engine.dispose()


@cache
def get_database() -> Database:
    """The service's database, built from the settings on first use."""
    return Database.from_settings(get_settings())


def get_engine() -> AsyncEngine:
    """The service's engine (the primary's)."""
    return get_database().engine


async def dispose_engine() -> None:
    """Close every pooled connection, the replicas' included, and forget all that was built
    from the settings: the next use builds it afresh."""
    if get_database.cache_info().currsize:
        database = get_database()
        get_database.cache_clear()
        await database.dispose()


def read_bind(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """The engine reads run on: in autocommit, no BEGIN and no COMMIT, two round trips fewer.

    Each statement sees what was committed when it started; one snapshot over several
    statements needs SessionDep. Behind PgBouncer reads keep their transactions: asyncpg
    prepares a statement in one message and runs it in the next, and only a transaction
    keeps both on one server.
    """
    if settings.database_pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession] | None = None,
) -> AsyncIterator[AsyncSession]:
    """Open a session; commit if the block succeeds, roll back if it raises, always close.

    On a SQLite file the service's writers take turns (sqlite.py): the block starts holding
    the write lock, so no writer of this process waits inside SQLite.
    """
    database, turns = None, None
    if factory is None:
        database = get_database()
        factory, turns = database.sessions, database.write_turns
    async with factory() as session, turns.turn(session) if turns else nullcontext():
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
    if database is not None and database.storage_full:
        database.storage_full = False  # a write went through: there is space again


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, committed when the handler returns."""
    async with session_scope() as session:
        yield session


# scope="function" commits before the response is sent: a failed commit is a 5xx, not a 200.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


class ReadOnlySession(Session):
    """A session that refuses ORM writes: flushes and ORM INSERT/UPDATE/DELETE statements."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise InvalidRequestError("this session is read-only; use SessionDep to write")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _read(state: ORMExecuteState) -> Result[Any] | None:
    """Refuse writes; retry on the primary a read that its replica failed to serve."""
    if state.is_insert or state.is_update or state.is_delete:
        raise InvalidRequestError("this session is read-only; use SessionDep to write")
    if "replica" not in state.session.info:
        return None  # run the statement as usual
    try:
        return state.invoke_statement()
    except SQLAlchemyError as error:  # a connection or pool failure, or a bug
        if unavailable_cause(error) is None:
            raise
        router, replica, primary = state.session.info.pop("replica")
        router.set_state(replica, "down", f"a read failed: {type(error).__name__}")
        # This and every later statement of the session go to the primary.
        state.session.bind = read_bind(primary, get_settings()).sync_engine
        return state.invoke_statement()


def read_only_sessionmaker(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions on ``bind``; they never flush, so nothing autoflushes either."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


async def get_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session, on a replica when one is up (replicas.py)."""
    database = get_database()
    router = database.router
    replica = router.pick() if router is not None else None
    if replica is None:
        async with database.reads() as session:
            yield session
        return
    replica_reads = read_only_sessionmaker(read_bind(replica.engine, get_settings()))
    async with replica_reads() as session:
        session.info["replica"] = (router, replica, database.engine)
        yield session


# scope="function" gives the connection back before the response is sent.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
