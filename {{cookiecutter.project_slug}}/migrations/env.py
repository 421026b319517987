"""Alembic environment, from Alembic's async template.

The URL comes from the service's settings (DATABASE_URL), never from alembic.ini. A caller
that already holds a connection or an engine (tests, tools such as pytest-alembic) passes it
as config.attributes["connection"]: a Connection, an Engine or an AsyncEngine.

On PostgreSQL one run migrates at a time (an advisory lock held for the whole run), and each
statement waits at most DATABASE_MIGRATION_LOCK_TIMEOUT for a lock and runs at most
DATABASE_MIGRATION_STATEMENT_TIMEOUT. On SQLite the run is one BEGIN IMMEDIATE transaction,
which admits one writer at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Identity, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import Settings, settings_or_exit
from {{ cookiecutter.package_name }}.core.connect_errors import connect_error
from {{ cookiecutter.package_name }}.core.database import Base, UTCDateTime, utcnow
from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings

# Import every module that defines models here, so that autogenerate sees their tables.
{% if cookiecutter.example_domain == "meetings" %}
from {{ cookiecutter.package_name }}.meetings import (
    models as meetings_models,  # noqa: F401
)
{% endif %}

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata
log = logging.getLogger("alembic.env")

# The key of the PostgreSQL advisory lock that one migration run holds (advisory locks are
# per database). Any constant will do, as long as every run of this service uses it.
MIGRATION_LOCK_KEY = 0x6D6967726174  # "migrat"
LOCK_POLL_INTERVAL = 0.5  # seconds
# SQLSTATEs of a statement cancelled by lock_timeout, and by statement_timeout (or by hand).
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the service's own column pieces so that revisions suit every database."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        # Same DDL; the revision then does not depend on where the type lives.
        return "sa.DateTime(timezone=True)"
    if type_ == "server_default" and isinstance(getattr(obj, "arg", None), utcnow):
        # Compiled per database at migration time; as text it would be SQLite- or
        # PostgreSQL-only.
        autogen_context.imports.add(f"from {utcnow.__module__} import utcnow")
        return "utcnow()"
    return False


def compare_sqlite_server_default(
    _context: MigrationContext, _reflected: Column[Any], column: Column[Any], *_: Any
) -> bool | None:
    """Alembic's own comparison, except for identity keys, which SQLite has none of: its
    INTEGER PRIMARY KEY (the rowid) numbers rows by itself."""
    return False if isinstance(column.server_default, Identity) else None


def configure(**options: Any) -> None:
    """Configure the migration context with the options every mode shares."""
    context.configure(
        target_metadata=target_metadata,
        render_item=render_item,
        **options,
    )


def timeouts(settings: Settings, scope: str = "") -> list[str]:
    """The SET statements that bound each statement's lock wait and run time on PostgreSQL."""
    return [
        f"SET {scope}lock_timeout = '{settings.database_migration_lock_timeout * 1000:.0f}ms'",
        f"SET {scope}statement_timeout = "
        f"'{settings.database_migration_statement_timeout * 1000:.0f}ms'",
    ]


def run_migrations_offline() -> None:
    """Emit the SQL to stdout instead of running it ("alembic upgrade head --sql")."""
    settings = settings_or_exit()
    url = settings.sqlalchemy_url
    postgresql = url.get_backend_name() == "postgresql"
    configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=not postgresql,
        transaction_per_migration=postgresql,
    )
    if postgresql:
        # The script bounds its waits as an online run does.
        for statement in timeouts(settings):
            context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def one_run_at_a_time(connection: Connection) -> Iterator[None]:
    """On PostgreSQL: hold the migration lock, and bound every wait, for the whole run.

    The lock is the session's, not the transaction's: each migration commits on its own, and
    an autocommit block (CREATE INDEX CONCURRENTLY) commits in the middle of one. The timeouts
    are set once the lock is held: a second run waits for the first as long as it takes.
    In a caller's transaction (a test's), lock and settings end with that transaction.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    settings = settings_or_exit()
    key = {"key": MIGRATION_LOCK_KEY}
    if connection.in_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
        for statement in timeouts(settings, "LOCAL "):
            connection.exec_driver_sql(statement)
        yield
        return
    # Wait by asking again, outside any transaction in between: a waiter blocked in
    # pg_advisory_lock() holds a snapshot, which CREATE INDEX CONCURRENTLY in the run
    # holding the lock would wait for (a deadlock).
    for attempt in itertools.count():
        if connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
            break
        if attempt == 0:
            log.info("Waiting for another migration run to finish")
        connection.commit()
        time.sleep(LOCK_POLL_INTERVAL)
    for statement in timeouts(settings):
        connection.exec_driver_sql(statement)
    connection.commit()
    try:
        yield
        # What Alembic leaves open: with a transaction per migration, the version table that
        # a run with no migration to apply creates.
        connection.commit()
    finally:
        if not connection.invalidated:
            connection.rollback()
            connection.exec_driver_sql("RESET lock_timeout")
            connection.exec_driver_sql("RESET statement_timeout")
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            connection.commit()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection``: on PostgreSQL one transaction per migration, on
    SQLite one for the whole run."""
    # SQLite cannot ALTER most things: batch mode copies the table instead. With the
    # engine's BEGIN handling, a migration that fails halfway rolls back on SQLite too.
    # PostgreSQL: a transaction per migration releases each one's locks when it is done,
    # and confines a migration's own SET LOCAL to it.
    postgresql = connection.dialect.name == "postgresql"
    configure(
        connection=connection,
        render_as_batch=not postgresql,
        transactional_ddl=True,
        transaction_per_migration=postgresql,
        compare_server_default=True if postgresql else compare_sqlite_server_default,
    )
    with one_run_at_a_time(connection), context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        # Foreign keys are off during migrations (batch mode drops and recreates tables);
        # make sure the data still satisfies them.
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise RuntimeError(f"foreign key violations after migrating: {violations}")


async def run_async_migrations(engine: AsyncEngine) -> None:
    """Run the migrations on a connection of ``engine``, then close its pooled connections.

    Each Alembic command runs its own event loop (asyncio.run below); a connection pooled in
    one would be unusable in the next ("attached to a different loop"). The engine stays
    usable: it opens new connections when next asked.
    """
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def gave_up(error: DBAPIError) -> str | None:
    """The one-line reason of a migration stopped by a timeout; None for any other error."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    timed_out = sqlstate == LOCK_NOT_AVAILABLE or (
        sqlstate == QUERY_CANCELED and "statement timeout" in str(error.orig)
    )
    if not timed_out:
        return None
    settings = settings_or_exit()
    statement = " ".join(str(error.statement).split())
    statement = statement if len(statement) <= 80 else f"{statement[:77]}..."
    if sqlstate == LOCK_NOT_AVAILABLE:
        waited = (
            f"waited DATABASE_MIGRATION_LOCK_TIMEOUT ({settings.database_migration_lock_timeout:g}"
            f" s) for a lock to run {statement!r}: another transaction holds the table (see"
            " pg_locks and pg_stat_activity)"
        )
    else:
        waited = (
            "ran past DATABASE_MIGRATION_STATEMENT_TIMEOUT"
            f" ({settings.database_migration_statement_timeout:g} s) in {statement!r}"
        )
    return (
        f"{{ cookiecutter.package_name }}: migration gave up: it {waited}. Its transaction was "
        "rolled back; run it again once that is over, or raise the timeout for it"
    )


async def exit_unless_reachable(engine: AsyncEngine) -> None:
    """Exit with one line saying why no connection can be made and what to fix, not a
    traceback; the connection made otherwise stays in the pool for the migrations."""
    reason = await connect_error(engine)
    if reason is not None:
        raise SystemExit(f"{{ cookiecutter.package_name }}: {reason}")


async def run_with_own_engine() -> None:
    """Create an engine from the settings, run the migrations, close the engine."""
    engine = engine_from_settings(settings_or_exit(), migrating=True)
    try:
        await exit_unless_reachable(engine)
    except SystemExit:
        await engine.dispose()
        raise
    await run_async_migrations(engine)  # disposes the engine at its end


def run_migrations_online() -> None:
    """Run the migrations against the configured database, or the connectable given."""
    connectable = config.attributes.get("connection")
    if connectable is None:
        try:
            asyncio.run(run_with_own_engine())
        except DBAPIError as error:
            reason = gave_up(error)
            if reason is None:
                raise
            raise SystemExit(reason) from None
    elif isinstance(connectable, AsyncEngine):
        asyncio.run(run_async_migrations(connectable))
    elif isinstance(connectable, Engine):
        with connectable.connect() as connection:
            do_run_migrations(connection)
    elif isinstance(connectable, Connection):
        do_run_migrations(connectable)
    else:
        raise TypeError(
            'config.attributes["connection"] must be a Connection, an Engine or an '
            f"AsyncEngine, not {type(connectable).__name__}"
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
