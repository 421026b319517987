"""Engines built from the settings: time limits, connections checked and taken in turn."""

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Dialect, Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from ..config import Settings, get_settings
from .sqlite import configure_sqlite


def engine_from_settings(
    settings: Settings, *, url: URL | None = None, migrating: bool = False, limit: float = 0
) -> AsyncEngine:
    """The engine ``settings`` describe (for ``url``, a replica's), not connected yet; on
    PostgreSQL, statements limited to ``limit`` s (0: none). ``migrating`` (Alembic) on
    SQLite: foreign keys off for batch mode, and SQLite waits out the busy timeout itself."""
    url, s = url or settings.sqlalchemy_url, settings
    pool = {"pool_timeout": s.database_pool_timeout, "pool_size": s.database_pool_size}
    pool |= {"max_overflow": s.database_max_overflow, "pool_recycle": s.database_pool_recycle}
    if url.get_backend_name() == "sqlite":
        memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        engine = create_async_engine(url, **({} if memory else pool))  # memory: a StaticPool
        configure_sqlite(engine, s.database_sqlite_busy_timeout_ms, migrating, memory)
    else:
        # The service's name in pg_stat_activity, to tell its connections apart.
        connect_args: dict[str, Any] = {"server_settings": {"application_name": s.app_name}}
        if s.database_pgbouncer:
            # No cached prepared statements, unique names: they would meet the wrong server.
            # https://docs.sqlalchemy.org/en/21/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
            connect_args["statement_cache_size"] = 0
            connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        if limit:  # asyncpg's, 1 s after the server's own (which comes first): a silent server
            connect_args["command_timeout"] = connect_args["timeout"] = limit + 1
        if limit and not s.database_pgbouncer:  # PostgreSQL's (PgBouncer refuses it here)
            connect_args["server_settings"]["statement_timeout"] = f"{math.ceil(limit * 1000)}"
        engine = create_async_engine(url, connect_args=connect_args, **pool)
        if limit:  # a 503; the connection stays clean, unless the server never answered
            event.listen(engine.sync_engine, "handle_error", _given_up)
        if limit and s.database_pgbouncer:  # one transaction is all it keeps on one server
            set_limit = f"SET LOCAL statement_timeout = {math.ceil(limit * 1000)}"
            event.listen(engine.sync_engine, "begin", lambda c: c.exec_driver_sql(set_limit))
        if s.database_pool_check_connections:
            check_connections_before_use(engine, ping_after=s.database_pool_ping_after)
    event.listen(engine.sync_engine, "do_connect", _connect)
    _TURNS[engine.sync_engine] = asyncio.Semaphore(s.database_pool_size + s.database_max_overflow)
    return engine


def _connect(dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Connect; asyncpg's OSError or TimeoutError becomes the driver's OperationalError."""
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as error:
        message = f"cannot connect to the database: {type(error).__name__}"  # no host name
        raise dialect.loaded_dbapi.OperationalError(message) from error


def _given_up(context: ExceptionContext) -> BaseException | None:
    """asyncpg gave up on a server that never answers (a frozen one): close it now, as lost."""
    driver = context.connection.connection.driver_connection if context.connection else None
    if not isinstance(context.original_exception, TimeoutError) or driver is None:
        return None
    driver.terminate()
    context.is_disconnect, context.invalidate_pool_on_disconnect = True, False
    error = (context.statement, context.parameters, context.original_exception)
    return exc.OperationalError(*error, connection_invalidated=True)


def read_bind(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """``engine`` for reads, in autocommit; not behind PgBouncer, where asyncpg prepares a
    statement in one message, runs it in the next, and a transaction keeps both on one server."""
    autocommit = not settings.database_pgbouncer
    return engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine


def check_connections_before_use(engine: AsyncEngine, *, ping_after: float) -> None:
    """Before use: a closed pooled connection is replaced, one idle over ``ping_after`` s pinged."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError("the server closed this connection")
        if time.monotonic() - record.info.get("last_used", 0.0) > ping_after:
            try:
                dbapi_connection.ping()
            except TimeoutError as error:  # a silent server: connecting again would wait as long,
                dbapi_connection.driver_connection.terminate()  # and so would a polite close
                raise exc.OperationalError("ping", None, error) from None
            except Exception as error:
                raise exc.DisconnectionError("this connection did not answer a ping") from error

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _mark_used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["last_used"] = time.monotonic()


_TURNS: WeakKeyDictionary[Engine, asyncio.Semaphore] = WeakKeyDictionary()  # see turn()


@asynccontextmanager
async def turn(engine: AsyncEngine, *, or_else: AsyncEngine | None = None) -> AsyncIterator[bool]:
    """A turn for ``engine``'s pooled connections in arrival order (SQLAlchemy's pool serves
    whoever asks next) within the pool timeout; past it, ``or_else``'s (the block gets False)."""
    turns = _TURNS[engine.sync_engine]
    try:
        await asyncio.wait_for(turns.acquire(), get_settings().database_pool_timeout)
    except TimeoutError:
        if or_else is None:
            raise exc.TimeoutError("no pooled connection became free in time") from None
        async with turn(or_else):
            yield False
            return
    try:
        yield True
    finally:
        turns.release()
