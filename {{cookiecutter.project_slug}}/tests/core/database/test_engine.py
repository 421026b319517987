"""The engine: pool settings, connection arguments, connection failures as database errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from {{ cookiecutter.package_name }}.core.database import dispose_engine, get_engine
from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings

from tests.harness import settings_for


def test_a_postgresql_engine_uses_the_pool_settings() -> None:
    settings = settings_for(
        "postgresql://svc:pw@db.invalid/app",
        database_pool_size=3,
        database_max_overflow=2,
        database_pool_timeout=4.5,
        database_pool_recycle=60,
    )
    engine = engine_from_settings(settings)
    pool: Any = engine.sync_engine.pool
    assert engine.url.drivername == "postgresql+asyncpg"
    assert (pool.size(), pool.timeout(), pool._recycle, pool._max_overflow) == (3, 4.5, 60, 2)
    # Not SQLAlchemy's pre-ping (three round trips): core/database/engine.py checks instead.
    assert pool._pre_ping is False


def test_a_sqlite_file_engine_uses_the_pool_settings_and_memory_one_connection(
    tmp_path: Path,
) -> None:
    file_engine = engine_from_settings(
        settings_for(f"sqlite:///{tmp_path / 'app.db'}", database_pool_size=7)
    )
    pool: Any = file_engine.sync_engine.pool
    assert (pool.size(), pool._max_overflow) == (7, 0)
    memory_engine = engine_from_settings(settings_for("sqlite://", database_pool_size=7))
    assert isinstance(memory_engine.sync_engine.pool, StaticPool)


async def connect_arguments(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keyword arguments the engine would pass to asyncpg.connect() (no connection made)."""
    captured: dict[str, Any] = {}

    def capture(*_args: Any, **kwargs: Any) -> None:
        captured.update(kwargs)
        raise RuntimeError("captured; not connecting")

    monkeypatch.setattr(engine.dialect, "connect", capture)
    with pytest.raises(RuntimeError, match="captured"):
        await engine.connect()
    await engine.dispose()
    return captured


async def test_postgresql_connections_carry_the_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for("postgresql://svc:pw@db.invalid/app", app_name="Billing")
    arguments = await connect_arguments(engine_from_settings(settings), monkeypatch)
    assert arguments["server_settings"] == {"application_name": "Billing"}
    assert "statement_cache_size" not in arguments


async def test_behind_pgbouncer_no_prepared_statement_outlives_its_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for("postgresql://svc:pw@bouncer/app", database_pgbouncer=True)
    engine = engine_from_settings(settings)
    assert engine.url.query == {"prepared_statement_cache_size": "0"}
    arguments = await connect_arguments(engine, monkeypatch)
    assert arguments["statement_cache_size"] == 0
    names = {arguments["prepared_statement_name_func"]() for _ in range(3)}
    assert len(names) == 3


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("postgresql://svc:hunter2@db.invalid/app", "gaierror"),  # the host does not resolve
        ("postgresql://svc:hunter2@127.0.0.1:1/app", "ConnectionRefusedError"),
    ],
    ids=["unresolvable-host", "refused"],
)
async def test_a_failed_connection_is_a_database_error_naming_only_its_cause(
    url: str, cause: str
) -> None:
    engine = engine_from_settings(settings_for(url))
    try:
        with pytest.raises(OperationalError) as caught:
            await engine.connect()
    finally:
        await engine.dispose()
    assert f"cannot connect to the database: {cause}" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert caught.value.orig is not None
    assert isinstance(caught.value.orig.__cause__, OSError)


async def test_get_engine_reads_the_settings_once_and_dispose_forgets_it(
    tmp_path: Path, environ: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "configured.db"
    environ.setenv("DATABASE_URL", f"sqlite:///{database}")
    first = get_engine()
    assert first is get_engine()
    assert first.url.database == str(database)
    await dispose_engine()
    await dispose_engine()  # safe to repeat
    assert get_engine() is not first
