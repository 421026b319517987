"""Alembic environment, from Alembic's async template.

The URL comes from the service's settings (DATABASE_URL), never from alembic.ini. A caller
that already holds a connection or an engine (tests, tools such as pytest-alembic) passes it
as config.attributes["connection"]: a Connection, an Engine or an AsyncEngine.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.config import settings_or_exit
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


def configure(**options: Any) -> None:
    """Configure the migration context with the options every mode shares."""
    context.configure(
        target_metadata=target_metadata,
        compare_server_default=True,
        render_item=render_item,
        **options,
    )


def run_migrations_offline() -> None:
    """Emit the SQL to stdout instead of running it ("alembic upgrade head --sql")."""
    url = settings_or_exit().sqlalchemy_url
    configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection`` in one transaction."""
    # SQLite cannot ALTER most things: batch mode copies the table instead. With the
    # engine's BEGIN handling, a migration that fails halfway rolls back on SQLite too.
    configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        # Foreign keys are off during migrations (batch mode drops and recreates tables);
        # make sure the data still satisfies them.
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise RuntimeError(f"foreign key violations after migrating: {violations}")


async def run_async_migrations(engine: AsyncEngine) -> None:
    """Run the migrations on a connection of ``engine``."""
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)


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
        await run_async_migrations(engine)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Run the migrations against the configured database, or the connectable given."""
    connectable = config.attributes.get("connection")
    if connectable is None:
        asyncio.run(run_with_own_engine())
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
