"""The engine: pool settings, connection arguments, connection failures as database errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool

from {{ cookiecutter.package_name }}.core.database import dispose_engine, get_engine
from {{ cookiecutter.package_name }}.core.database.engine import (
    connect_error,
    create_engine,
    describe_connect_error,
)

from tests.harness import free_port, postgres_server_url, settings_for


def test_a_postgresql_engine_uses_the_pool_settings() -> None:
    settings = settings_for(
        "postgresql://svc:pw@db.invalid/app",
        database_pool_size=3,
        database_max_overflow=2,
        database_pool_timeout=4.5,
        database_pool_recycle=60,
    )
    engine = create_engine(settings)
    pool: Any = engine.sync_engine.pool
    assert engine.url.drivername == "postgresql+asyncpg"
    assert (pool.size(), pool.timeout(), pool._recycle, pool._max_overflow) == (3, 4.5, 60, 2)
    # Not SQLAlchemy's pre-ping (three round trips): core/database/liveness.py checks instead.
    assert pool._pre_ping is False


def test_a_sqlite_file_engine_uses_the_pool_settings_and_memory_one_connection(
    tmp_path: Path,
) -> None:
    file_engine = create_engine(
        settings_for(f"sqlite:///{tmp_path / 'app.db'}", database_pool_size=7)
    )
    pool: Any = file_engine.sync_engine.pool
    assert (pool.size(), pool._max_overflow) == (7, 0)
    memory_engine = create_engine(settings_for("sqlite://", database_pool_size=7))
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
    arguments = await connect_arguments(create_engine(settings), monkeypatch)
    assert arguments["server_settings"] == {"application_name": "Billing"}
    assert "statement_cache_size" not in arguments


async def test_behind_pgbouncer_no_prepared_statement_outlives_its_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for("postgresql://svc:pw@bouncer/app", database_pgbouncer=True)
    engine = create_engine(settings)
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
    engine = create_engine(settings_for(url))
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


async def connect_error_of(url: str) -> str | None:
    """What connect_error says about ``url``; checked to be one line without the password."""
    engine = create_engine(settings_for(url))
    try:
        message = await connect_error(engine)
    finally:
        await engine.dispose()
    assert message is None or ("\n" not in message and "hunter2" not in message), message
    return message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Nothing listens on a port that was free a moment ago.
        (
            "postgresql+asyncpg://svc:hunter2@127.0.0.1:{port}/app",
            r"^nothing accepts connections at 127\.0\.0\.1:\d+; start PostgreSQL there, or fix "
            r"the host and port in DATABASE_URL$",
        ),
        (
            "postgresql+asyncpg://svc:hunter2@no-such-host.invalid/app",
            r"^the host 'no-such-host\.invalid' of DATABASE_URL does not resolve; fix the host",
        ),
        (
            "sqlite+aiosqlite:///{tmp}/no/such/folder/app.db",
            r"^the folder of the SQLite database .*/no/such/folder/app\.db does not exist; "
            r"create it \(mkdir -p .*/no/such/folder\) or fix DATABASE_URL$",
        ),
        # A folder where the file should be: SQLite cannot open it.
        ("sqlite+aiosqlite:///{tmp}", r"^cannot open the SQLite database .*; check that"),
    ],
    ids=["refused", "unknown-host", "missing-sqlite-folder", "sqlite-cannot-open"],
)
async def test_connect_error_names_the_problem_and_the_fix(
    tmp_path: Path, url: str, reason: str
) -> None:
    message = await connect_error_of(url.format(port=free_port(), tmp=tmp_path))
    assert message is not None
    assert re.search(reason, message), message


async def test_connect_error_is_none_when_a_connection_can_be_made(tmp_path: Path) -> None:
    assert await connect_error_of(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}") is None


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    ("database", "username", "reason"),
    [
        (
            "no_such_database_here",
            None,
            r'^database "no_such_database_here" does not exist; create it '
            r"\(createdb no_such_database_here\) or fix DATABASE_URL$",
        ),
        (
            None,
            "no_such_role_here",
            r"^the database refused the login of 'no_such_role_here' \(.+\); check the user "
            r"and password in DATABASE_URL$",
        ),
    ],
    ids=["missing-database", "refused-login"],
)
async def test_connect_error_explains_what_the_server_refused(
    database: str | None, username: str | None, reason: str
) -> None:
    server = postgres_server_url()
    assert server is not None
    url = server.set(
        database=database or server.database,
        username=username or server.username,
        password="hunter2" if username else server.password,
    )
    message = await connect_error_of(url.render_as_string(hide_password=False))
    assert message is not None
    assert re.search(reason, message), message


class ServerError(Exception):
    """A driver error as the asyncpg dialect raises it: the server's message and SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def failed_with(orig: Exception, cause: BaseException | None = None) -> DBAPIError:
    orig.__cause__ = cause
    return DBAPIError("connect", None, orig)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            failed_with(ServerError('database "app" does not exist', "3D000")),
            r'^database "app" does not exist; create it \(createdb app\)',
        ),
        (
            failed_with(ServerError('password authentication failed for user "svc"', "28P01")),
            r"^the database refused the login of 'svc' \(password authentication failed for "
            r'user "svc"\); check the user and password in DATABASE_URL$',
        ),
        (
            failed_with(OSError("cannot connect"), TimeoutError()),
            r"^no answer from db\.example\.com:6432 in time; check that PostgreSQL runs there",
        ),
        (
            failed_with(OSError("cannot connect"), PermissionError()),
            r"^cannot connect to the database \(PermissionError\); check DATABASE_URL$",
        ),
    ],
    ids=["missing-database", "wrong-password", "timeout", "other"],
)
def test_describe_connect_error_names_each_failure_without_the_password(
    error: DBAPIError, reason: str
) -> None:
    url = make_url("postgresql+asyncpg://svc:hunter2@db.example.com:6432/app")
    message = describe_connect_error(error, url)
    assert re.search(reason, message), message
    assert "hunter2" not in message
