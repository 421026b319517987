"""Engines built from the settings; connection failures turned into database errors."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from ..config import Settings
from .sqlite import configure_sqlite

# SQLSTATE classes of "cannot serve now": connection, authorization, no such database,
# insufficient resources, shutdown. https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})
CLIENT_GRACE = 0.5  # seconds the client waits past a statement's limit for the server's answer


def engine_from_settings(
    settings: Settings, *, url: URL | None = None, migrating: bool = False, limit: float = 0
) -> AsyncEngine:
    """The engine ``settings`` describe (for ``url``, a replica's), not connected yet; on
    PostgreSQL, each statement limited to ``limit`` seconds (0: none; see limit_statements).
    ``migrating`` (Alembic) on SQLite: foreign keys off for batch mode, and SQLite waits out
    the busy timeout itself, where the service's writers take turns (sqlite.WriteTurns)."""
    url = url or settings.sqlalchemy_url
    pool = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if url.get_backend_name() == "sqlite":
        # In-memory: SQLAlchemy's StaticPool, one connection that every session shares.
        memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        engine = create_async_engine(url, **({} if memory else pool))
        configure_sqlite(engine, settings.database_sqlite_busy_timeout_ms, migrating, memory)
    else:
        # The service's name in pg_stat_activity, to tell its connections apart.
        server_settings = {"application_name": settings.app_name}
        connect_args: dict[str, Any] = {"server_settings": server_settings}
        if limit:  # asyncpg's own limit, for a server that does not answer at all
            connect_args["command_timeout"] = connect_args["timeout"] = limit + CLIENT_GRACE
        if limit and not settings.database_pgbouncer:  # PgBouncer refuses this parameter
            server_settings["statement_timeout"] = f"{math.ceil(limit * 1000)}"
        if settings.database_pgbouncer:
            # No cached prepared statements, unique names: they would meet the wrong server.
            # https://docs.sqlalchemy.org/en/21/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
            connect_args["statement_cache_size"] = 0
            connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        engine = create_async_engine(url, connect_args=connect_args, **pool)
        if limit:
            limit_statements(engine, limit, settings.database_pgbouncer)
        if settings.database_pool_check_connections:
            check_connections_before_use(engine, ping_after=settings.database_pool_ping_after)
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def _connect(dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Connect; asyncpg's OSError (socket.gaierror, refused, ...) or TimeoutError, which
    SQLAlchemy passes through unwrapped, becomes the driver's OperationalError."""
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as error:
        message = f"cannot connect to the database: {type(error).__name__}"  # no host name
        raise dialect.loaded_dbapi.OperationalError(message) from error


def limit_statements(engine: AsyncEngine, limit: float, pgbouncer: bool) -> None:
    """PostgreSQL cancels a statement past ``limit`` (statement_timeout; the connection stays
    usable); asyncpg gives up CLIENT_GRACE later on a server that does not answer at all (a
    frozen one keeps its connections open): that connection is closed at once, not waited
    for, and the error is a lost connection's."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _given_up(context: ExceptionContext) -> BaseException | None:
        if not isinstance(context.original_exception, TimeoutError) or not context.connection:
            return None
        context.connection.connection.driver_connection.terminate()
        context.is_disconnect, context.invalidate_pool_on_disconnect = True, False
        error = (context.statement, context.parameters, context.original_exception)
        return OperationalError(*error, connection_invalidated=True)

    if pgbouncer:  # SET LOCAL lasts one transaction: all that PgBouncer keeps on one server
        limit_ms = math.ceil(limit * 1000)

        @event.listens_for(engine.sync_engine, "begin")
        def _set_limit(connection: Connection) -> None:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {limit_ms}")


Cause = Literal["pool exhausted", "locked", "storage full", "timed out", "unreachable"]


def unavailable_cause(error: BaseException) -> Cause | None:
    """Why the database cannot serve now, if ``error`` says so (retry later); None: a bug."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the pool's, not the built-in
        return "pool exhausted"
    if not isinstance(error, DBAPIError):
        return None
    sqlite_error = str(getattr(error.orig, "sqlite_errorname", ""))
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    if sqlite_error == "SQLITE_FULL" or sqlstate == "53100":  # disk full
        return "storage full"
    if sqlite_error.startswith("SQLITE_BUSY"):  # waited past the busy timeout
        return "locked"
    if sqlstate == "57014":  # query_canceled: by statement_timeout, or by hand
        return "timed out"
    unreachable = error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return "unreachable" if unreachable or isinstance(error, OperationalError) else None


def read_bind(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """``engine`` for reads, in autocommit (no BEGIN, no COMMIT); not behind PgBouncer, where
    asyncpg prepares a statement in one message and runs it in the next, and only a
    transaction keeps both on one server."""
    if settings.database_pgbouncer:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def check_connections_before_use(engine: AsyncEngine, *, ping_after: float) -> None:
    """Replace a dead pooled PostgreSQL connection before use: a closed one is known for free,
    one idle over ``ping_after`` s gets a ping (not pool_pre_ping's three round trips)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get("last_used", 0.0)
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")
        if idle > ping_after:
            try:
                dbapi_connection.ping()
            except Exception as error:
                raise DisconnectionError("this connection did not answer a ping") from error

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _mark_used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["last_used"] = time.monotonic()


class ConnectionTurns:
    """Requests take a pool's connections in arrival order, within DATABASE_POOL_TIMEOUT.
    SQLAlchemy's pool gives a freed connection to whoever asks next, often a request that
    just arrived, not one already waiting, which may then wait again and again; an asyncio
    semaphore (sized to the pool) is first come, first served."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.database_pool_timeout
        self._free = asyncio.Semaphore(settings.database_pool_size + settings.database_max_overflow)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for this request's turn; give it up at the end of the block."""
        try:
            await asyncio.wait_for(self._free.acquire(), self.timeout)
        except TimeoutError:
            raise sqlalchemy.exc.TimeoutError("no turn for a pooled connection in time") from None
        try:
            yield
        finally:
            self._free.release()
