"""Sessions: one per request that writes (SessionDep), read-only ones for reads (ReadSessionDep)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import Result, event
from sqlalchemy.exc import InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from ..config import get_settings
from .engine import get_engine, is_unavailable
from .replicas import get_read_router


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
def _read(state: ORMExecuteState) -> Result[Any] | None:
    """Refuse writes; retry on the primary a read that its replica failed to serve."""
    if state.is_insert or state.is_update or state.is_delete:
        raise InvalidRequestError("this session is read-only; use SessionDep to write")
    if "replica" not in state.session.info:
        return None  # run the statement as usual
    try:
        return state.invoke_statement()
    except SQLAlchemyError as error:  # a connection or pool failure, or a bug
        if not is_unavailable(error):
            raise
        router, replica, primary = state.session.info.pop("replica")
        router.set_state(replica, "down", f"a read failed: {type(error).__name__}")
        state.session.bind = primary  # this and every later statement of the session
        return state.invoke_statement()


def read_only_sessionmaker(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions on ``bind``; they never flush, so nothing autoflushes either."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


@lru_cache(maxsize=16)
def _read_bind(engine: AsyncEngine) -> AsyncEngine:
    # Autocommit: no BEGIN and no COMMIT, two round trips fewer. Each statement sees what was
    # committed when it started; one snapshot over several statements needs SessionDep.
    # Behind PgBouncer reads keep their transactions: asyncpg prepares a statement in one
    # message and runs it in the next, and only a transaction keeps both on one server.
    if get_settings().database_pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@lru_cache(maxsize=16)
def _read_sessions(bind: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return read_only_sessionmaker(bind)


def get_read_sessionmaker(engine: AsyncEngine | None = None) -> async_sessionmaker[AsyncSession]:
    """The factory of read-only sessions on ``engine`` (default: the primary's)."""
    return _read_sessions(_read_bind(engine or get_engine()))


async def get_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session, on a replica when one is up (replicas.py)."""
    router = get_read_router()
    replica = router.pick() if router is not None else None
    async with get_read_sessionmaker(replica.engine if replica else None)() as session:
        if router is not None and replica is not None:
            primary = _read_bind(get_engine()).sync_engine
            session.info["replica"] = (router, replica, primary)
        yield session


# scope="function" gives the connection back before the response is sent.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
