"""Engines built from the settings; connection failures turned into database errors."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..config import Settings
from .liveness import check_connections_before_use
from .sqlite import BUSY_SLICE_MS, configure_sqlite, in_memory

# SQLSTATE classes that mean "the database cannot serve now", not "the request is wrong":
# connection exception, invalid authorization, invalid catalog (no such database),
# insufficient resources (too many connections), operator intervention (shutting down).
# https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})


def engine_from_settings(
    settings: Settings, *, url: URL | None = None, migrating: bool = False
) -> AsyncEngine:
    """Create the engine that ``settings`` describe (for ``url``, a replica's, if given); no
    connection is opened yet.

    ``migrating``: an engine for Alembic. On SQLite, foreign keys are off (batch mode copies
    and drops tables) and SQLite itself waits out the busy timeout; the service's own
    writers wait in turns instead, and SQLite only briefly (sqlite.WriteTurns).
    """
    url = url or settings.sqlalchemy_url
    pool = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if url.get_backend_name() == "sqlite":
        memory = in_memory(url)
        # In-memory: SQLAlchemy's StaticPool, one connection that every session shares.
        engine = create_async_engine(url, **({} if memory else pool))
        busy_timeout_ms = settings.database_sqlite_busy_timeout_ms
        configure_sqlite(
            engine,
            busy_timeout_ms=busy_timeout_ms if migrating else min(busy_timeout_ms, BUSY_SLICE_MS),
            foreign_keys=not migrating,
            file_database=not memory,
        )
    else:
        # The service's name in pg_stat_activity, to tell its connections apart.
        connect_args: dict[str, Any] = {"server_settings": {"application_name": settings.app_name}}
        if settings.database_pgbouncer:
            # asyncpg's cached prepared statements would meet the wrong server connection:
            # 'prepared statement "..." does not exist'. No caches, and unique names.
            # https://docs.sqlalchemy.org/en/21/dialects/postgresql.html#prepared-statement-name-with-pgbouncer
            url = url.update_query_dict({"prepared_statement_cache_size": "0"})
            connect_args["statement_cache_size"] = 0
            connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        engine = create_async_engine(url, connect_args=connect_args, **pool)
        if settings.database_pool_check_connections:
            check_connections_before_use(engine, ping_after=settings.database_pool_ping_after)
    event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def _connect(dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Connect; a network failure becomes the driver's OperationalError, a database error.

    asyncpg raises plain OSError (socket.gaierror for a host that does not resolve, a refused
    connection, ...) or TimeoutError, which SQLAlchemy passes through unwrapped.
    """
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as error:
        # The type only: the message can hold the host name.
        message = f"cannot connect to the database: {type(error).__name__}"
        raise dialect.loaded_dbapi.OperationalError(message) from error


Cause = Literal["pool exhausted", "locked", "storage full", "unreachable"]


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
    if (
        isinstance(error, OperationalError)
        or error.connection_invalidated
        or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    ):
        return "unreachable"
    return None
