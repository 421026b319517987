"""Why no connection can be made, in one line with the fix: what commands print instead of a
traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from {{ cookiecutter.package_name }}.core.connect_errors import (
    connect_error,
    describe_connect_error,
)
from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings

from tests.harness import free_port, postgres_server_url, settings_for


async def connect_error_of(url: str) -> str | None:
    """What connect_error says about ``url``; checked to be one line without the password."""
    engine = engine_from_settings(settings_for(url))
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
