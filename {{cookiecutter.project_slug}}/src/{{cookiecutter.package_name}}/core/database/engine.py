"""Engines built from the settings; connection failures turned into database errors."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from ..config import Settings
from .sqlite import configure_sqlite

# SQLSTATE classes of "cannot serve now": connection, authorization, no such database,
# insufficient resources, shutdown. https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})


def engine_from_settings(
    settings: Settings, *, url: URL | None = None, migrating: bool = False
) -> AsyncEngine:
    """The engine ``settings`` describe (for ``url``, a replica's), not connected yet;
    ``migrating`` (Alembic): see configure_sqlite."""
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
        connect_args: dict[str, Any] = {"server_settings": {"application_name": settings.app_name}}
        if settings.database_pgbouncer:
            # No cached prepared statements, unique names: they would meet the wrong server.
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
    """Connect; an OSError or TimeoutError (unwrapped by SQLAlchemy) becomes OperationalError."""
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as error:
        message = f"cannot connect to the database: {type(error).__name__}"  # no host name
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
    unreachable = error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return "unreachable" if unreachable or isinstance(error, OperationalError) else None


def read_bind(engine: AsyncEngine, settings: Settings) -> AsyncEngine:
    """``engine`` for reads, in autocommit (no BEGIN, no COMMIT); not behind PgBouncer, where
    only a transaction keeps asyncpg's prepare and execute on one server connection."""
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
