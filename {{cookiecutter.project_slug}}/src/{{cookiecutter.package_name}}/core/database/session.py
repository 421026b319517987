"""The service's database, built once per process, and its sessions (writes and reads)."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Result, event
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from ..config import get_settings
from .engine import engine_from_settings, read_bind, turn
from .replicas import ReadRouter, read_router, retry_on_primary
from .sqlite import WriteTurns


@dataclass
class Database:
    """All that is built from the settings; dispose_engine() forgets all of it."""

    engine: AsyncEngine  # the primary's, for requests: statements have a time limit
    sessions: async_sessionmaker[AsyncSession]
    jobs: async_sessionmaker[AsyncSession]  # session_scope()'s: no time limit
    reads: async_sessionmaker[AsyncSession]  # read-only, on the primary
    router: ReadRouter | None  # None: every read goes to the primary
    replica_reads: dict[str, async_sessionmaker[AsyncSession]]  # by replica name
    write_turns: WriteTurns | None  # SQLite only
    storage_full: bool = False  # the last write failed for want of space (/readyz says so)


@cache
def get_database() -> Database:
    """The service's database, built on first use (no connection yet)."""
    settings = get_settings()
    engine = engine_from_settings(settings, limit=settings.database_statement_timeout)
    sqlite = engine.dialect.name == "sqlite"  # in memory too: one shared connection
    router = read_router(settings, engine)
    replicas = router.replicas if router else []
    jobs = engine if sqlite else engine_from_settings(settings)  # no time limit
    return Database(
        engine,
        async_sessionmaker(engine, expire_on_commit=False),
        async_sessionmaker(jobs, expire_on_commit=False),
        read_only_sessionmaker(read_bind(engine, settings)),
        router,
        {r.name: read_only_sessionmaker(read_bind(r.engine, settings)) for r in replicas},
        WriteTurns(settings.database_sqlite_busy_timeout_ms / 1000) if sqlite else None,
    )


def get_engine() -> AsyncEngine:
    """The service's engine (the primary's, for requests)."""
    return get_database().engine


async def dispose_engine() -> None:
    """Close every pooled connection, the replicas' too, and forget all that was built."""
    if get_database.cache_info().currsize:
        database = get_database()
        get_database.cache_clear()
        replicas = database.router.replicas if database.router else []
        for engine in {database.engine, database.jobs.kw["bind"], *(r.engine for r in replicas)}:
            await engine.dispose()


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession] | None = None,
) -> AsyncIterator[AsyncSession]:
    """A session (for work outside requests: no time limit, unless ``factory`` is given),
    committed if the block succeeds, rolled back if it raises; SQLite's write lock held."""
    database = get_database()
    turns = database.write_turns if factory in (None, database.sessions) else None  # not a test's
    async with (factory or database.jobs)() as session:
        async with turns.turn(session) if turns else nullcontext():
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
        database.storage_full = False  # a write went through: there is space (again)


async def get_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request, committed when the handler returns."""
    async with turn(get_engine()), session_scope(get_database().sessions) as session:
        yield session


# scope="function" commits before the response is sent: a failed commit is a 5xx, not a 200.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


class ReadOnlySession(Session):
    """A session that refuses ORM writes: flushes and ORM INSERT/UPDATE/DELETE statements."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise InvalidRequestError("this session is read-only; use SessionDep to write")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _read(state: ORMExecuteState) -> Result[Any] | None:
    """Refuse writes; retry on the primary a read that its replica failed (replicas.py)."""
    if state.is_insert or state.is_update or state.is_delete:
        raise InvalidRequestError("this session is read-only; use SessionDep to write")
    return retry_on_primary(state) if "replica" in state.session.info else None


def read_only_sessionmaker(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions on ``bind``; they never flush, so nothing autoflushes either."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


async def get_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session, on a replica when one is up (replicas.py)."""
    database = get_database()
    replica, primary = database.router.pick() if database.router else None, database.engine
    async with turn(replica.engine, or_else=primary) if replica else turn(primary) as own_turn:
        factory = database.replica_reads[replica.name] if replica and own_turn else database.reads
        async with factory() as session:
            if replica and own_turn:  # not the primary's, which it took when the replica's was long
                session.info["replica"] = (database.router, replica, database.engine)
            yield session


# scope="function" gives the connection back before the response is sent.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
