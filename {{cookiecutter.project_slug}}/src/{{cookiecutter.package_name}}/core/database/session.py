"""The async engine, the session factory and the per-request session dependency."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.engine import Row
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import Executable

from ..config import Settings, get_settings
from .liveness import check_connections_before_use
from .sqlite import configure_sqlite, is_sqlite_memory


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


def create_engine(settings: Settings, *, sqlite_foreign_keys: bool = True) -> AsyncEngine:
    """Create the engine that ``settings`` describe; no connection is opened yet.

    ``sqlite_foreign_keys=False`` is for migrations: SQLite's batch mode copies and drops
    tables, which with foreign keys on would cascade or fail.
    """
    url = settings.sqlalchemy_url
    pool: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if url.get_backend_name() == "sqlite":
        memory = is_sqlite_memory(url)
        # In-memory databases get SQLAlchemy's StaticPool: one shared connection, so every
        # session sees the same database (and dispose() wipes it).
        engine = create_async_engine(url, echo=settings.database_echo, **({} if memory else pool))
        configure_sqlite(
            engine, settings, foreign_keys=sqlite_foreign_keys, file_database=not memory
        )
        return engine
    # The service's name in pg_stat_activity, to tell its connections apart.
    connect_args: dict[str, Any] = {"server_settings": {"application_name": settings.app_name}}
    if settings.database_pgbouncer:
        # asyncpg prepares every statement and caches it per connection; behind PgBouncer
        # that ends in 'prepared statement "..." does not exist' (or "already exists").
        # Turn both caches off and give each statement a unique name.
        # https://docs.sqlalchemy.org/en/21/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
        url = url.update_query_dict({"prepared_statement_cache_size": "0"})
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    engine = create_async_engine(
        url,
        connect_args=connect_args,
        echo=settings.database_echo,
        **pool,
    )
    if settings.database_pool_pre_ping:
        check_connections_before_use(engine, ping_after=settings.database_pool_ping_after)
    return engine


@cache
def get_engine() -> AsyncEngine:
    """Return the service's engine, created on first use from the settings."""
    return create_engine(get_settings())


@cache
def get_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """Return the service's session factory (objects stay loaded after commit)."""
    return async_sessionmaker(get_engine(), expire_on_commit=False)


class ReadOnlySessionError(InvalidRequestError):
    """A read-only session was asked to write."""


class ReadOnlySession(Session):
    """A session that refuses ORM writes: flushes and ORM INSERT/UPDATE/DELETE statements."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("this session is read-only; use SessionDep to write")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlySessionError("this session is read-only; use SessionDep to write")


def read_only_sessionmaker(bind: AsyncEngine | AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Read-only sessions on ``bind``; they never flush, so nothing autoflushes either."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


@cache
def get_read_engine() -> AsyncEngine:
    """Return the engine for reads: the service's pool, in autocommit (no BEGIN, no COMMIT).

    A request that only reads saves two round trips. Each statement sees the data committed
    when it starts; a read that needs one snapshot over several statements uses SessionDep.
    Behind PgBouncer reads keep their transactions: asyncpg prepares a statement in one
    message and runs it in the next, and only a transaction keeps both on one server.
    """
    engine = get_engine()
    if get_settings().database_pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@cache
def get_read_sessionmaker() -> async_sessionmaker[AsyncSession]:
    """Return the factory of read-only sessions, on the read engine."""
    return read_only_sessionmaker(get_read_engine())


async def dispose_engine() -> None:
    """Close the service's pooled connections, if an engine was ever created."""
    if get_engine.cache_info().currsize:
        await get_engine().dispose()
    _service_reader.cache_clear()
    get_read_sessionmaker.cache_clear()
    get_read_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_engine.cache_clear()


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


# scope="function" runs the commit before the response is sent, so a commit that fails
# becomes a 5xx instead of a 200 for a change that was never stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session for a request that only reads."""
    session = get_read_sessionmaker()()
    try:
        yield session
    finally:
        await session.close()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


class Reader:
    """Read-only Core statements, each on a pooled connection held just while it runs.

    The fast path for hot reads, such as one row by id: no session and no ORM objects, and
    the connection goes back to the pool before the response is built. On ``GET /rooms/{id}``
    it serves about 1.5 times the requests per second of ``session.get`` on ReadSessionDep.
    Statements run in autocommit, like read-only sessions; INSERT, UPDATE and DELETE
    statements are refused (like ReadOnlySession, it does not parse ``text()``).
    """

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]]):
        self._connect = connect

    async def first(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The first row of ``statement``, or None."""
        async with self._connect() as connection:
            return (await connection.execute(_read_only(statement), parameters)).first()

    async def all(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Every row of ``statement``."""
        async with self._connect() as connection:
            return (await connection.execute(_read_only(statement), parameters)).all()


def _read_only(statement: Executable) -> Executable:
    if getattr(statement, "is_dml", False):
        raise ReadOnlySessionError("a Reader is read-only; use SessionDep to write")
    return statement


@cache
def _service_reader() -> Reader:
    return Reader(get_read_engine().connect)


async def get_reader() -> Reader:
    """FastAPI dependency: the service's Reader, on the read engine.

    An ``async def`` that returns: FastAPI runs a plain ``def`` in a thread, and its
    machinery for a dependency with ``yield`` costs about as much as the query itself.
    """
    return _service_reader()


ReaderDep = Annotated[Reader, Depends(get_reader)]
