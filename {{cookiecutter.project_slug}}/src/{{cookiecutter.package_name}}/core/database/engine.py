"""The async engine: created from the settings on first use, one per process."""

from __future__ import annotations

import socket
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..config import Settings, get_settings
from .liveness import check_connections_before_use
from .sqlite import configure_sqlite

# SQLSTATE classes that mean "the database cannot serve now", not "the request is wrong":
# connection exception, invalid authorization, invalid catalog (no such database),
# insufficient resources (too many connections), operator intervention (shutting down).
# https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})


def create_engine(
    settings: Settings, *, url: URL | None = None, sqlite_foreign_keys: bool = True
) -> AsyncEngine:
    """Create the engine that ``settings`` describe (for ``url``, a replica's, if given); no
    connection is opened yet.

    Migrations turn ``sqlite_foreign_keys`` off: batch mode copies and drops tables.
    """
    url = url or settings.sqlalchemy_url
    pool = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout,
        "pool_recycle": settings.database_pool_recycle,
    }
    if url.get_backend_name() == "sqlite":
        memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
        # In-memory: SQLAlchemy's StaticPool, one connection that every session shares.
        engine = create_async_engine(url, **({} if memory else pool))
        configure_sqlite(
            engine,
            busy_timeout_ms=settings.database_sqlite_busy_timeout_ms,
            foreign_keys=sqlite_foreign_keys,
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


async def connect_error(engine: AsyncEngine) -> str | None:
    """Why no connection to ``engine``'s database can be made, and the fix, in one line
    without the password (for commands such as ``alembic upgrade head``); None if one can.

    A connection made stays in the pool for the caller.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        # Checked first: aiosqlite's thread outlives a failed open and can report to a
        # closed event loop.
        folder = Path(url.database).parent
        if not folder.is_dir():
            return (
                f"the folder of the SQLite database {url.database} does not exist; create it "
                f"(mkdir -p {folder}) or fix DATABASE_URL"
            )
    try:
        async with engine.connect():
            return None
    except DBAPIError as error:
        return describe_connect_error(error, url)


def describe_connect_error(error: DBAPIError, url: URL) -> str:
    """The one line of ``connect_error`` for a connection to ``url`` that failed with ``error``."""
    cause = error.orig.__cause__ if error.orig is not None else None
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    where = f"{url.host}:{url.port or 5432}"
    if getattr(error.orig, "sqlite_errorname", None) == "SQLITE_CANTOPEN":
        return (
            f"cannot open the SQLite database {url.database}; check that its folder is "
            "writable, or fix DATABASE_URL"
        )
    if sqlstate == "3D000":  # invalid catalog name
        return (
            f'database "{url.database}" does not exist; create it (createdb {url.database}) '
            "or fix DATABASE_URL"
        )
    if sqlstate[:2] == "28":  # invalid authorization: the server's message names no secret
        return (
            f"the database refused the login of {url.username!r} ({error.orig}); check the "
            "user and password in DATABASE_URL"
        )
    if isinstance(cause, socket.gaierror):
        return f"the host {url.host!r} of DATABASE_URL does not resolve; fix the host name"
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"nothing accepts connections at {where}; start PostgreSQL there, or fix the "
            "host and port in DATABASE_URL"
        )
    if isinstance(cause, TimeoutError):
        return f"no answer from {where} in time; check that PostgreSQL runs there and is reachable"
    reason = type(cause or error.orig).__name__
    return f"cannot connect to the database ({reason}); check DATABASE_URL"


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot serve now (retry later), not a bug."""
    if isinstance(error, OperationalError | sqlalchemy.exc.TimeoutError):  # the pool's
        return True
    if isinstance(error, DBAPIError):
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        return error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


@cache
def get_engine() -> AsyncEngine:
    """Return the service's engine, created on first use from the settings."""
    return create_engine(get_settings())


@cache
def get_replica_engines() -> tuple[AsyncEngine, ...]:
    """The engines of the read replicas (DATABASE_READ_URL), one pool each; none by default."""
    settings = get_settings()
    return tuple(create_engine(settings, url=url) for url in settings.read_urls)


async def dispose_engine() -> None:
    """Close the service's pooled connections, the replicas' included, and forget them."""
    engines = [get_engine()] if get_engine.cache_info().currsize else []
    if get_replica_engines.cache_info().currsize:
        engines += get_replica_engines()
    for engine in engines:
        await engine.dispose()
    get_engine.cache_clear()
    get_replica_engines.cache_clear()
