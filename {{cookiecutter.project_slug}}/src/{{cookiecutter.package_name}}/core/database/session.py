"""Sessions: one per request that writes (SessionDep), read-only ones for reads (ReadSessionDep)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from ..config import get_settings
from .engine import get_engine


@lru_cache(maxsize=1)
def _sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """The service's session factory (objects stay loaded after commit)."""
    return _sessionmaker(get_engine())


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession] | None = None,
) -> AsyncIterator[AsyncSession]:
    """Open a session; commit if the block succeeds, roll back if it raises, always close."""
    async with (factory or get_sessionmaker())() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


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
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise InvalidRequestError("this session is read-only; use SessionDep to write")


def read_only_sessionmaker(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions on ``bind``; they never flush, so nothing autoflushes either."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


@lru_cache(maxsize=1)
def _read_sessionmaker(engine: AsyncEngine, pgbouncer: bool) -> async_sessionmaker[AsyncSession]:
    # Autocommit: no BEGIN and no COMMIT, two round trips fewer. Each statement sees what was
    # committed when it started; one snapshot over several statements needs SessionDep.
    # Behind PgBouncer reads keep their transactions: asyncpg prepares a statement in one
    # message and runs it in the next, and only a transaction keeps both on one server.
    return read_only_sessionmaker(
        engine if pgbouncer else engine.execution_options(isolation_level="AUTOCOMMIT")
    )


def get_read_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """The factory of the read-only sessions that ReadSessionDep hands out."""
    return _read_sessionmaker(get_engine(), get_settings().database_pgbouncer)


async def get_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session for a request that only reads."""
    async with get_read_sessionmaker()() as session:
        yield session


# scope="function" gives the connection back before the response is sent.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
