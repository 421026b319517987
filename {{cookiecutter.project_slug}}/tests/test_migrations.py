"""Alembic: the async env.py, upgrade/downgrade round trips, and models matching migrations."""

from __future__ import annotations

import asyncio
import configparser
import re
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.harness import free_port
from tests.migrating import PROJECT_ROOT, alembic_config, run_alembic, run_cli

PACKAGE = "{{ cookiecutter.package_name }}"

FAILING_REVISION = '''
"""A migration that fails halfway."""

import sqlalchemy as sa
from alembic import op

revision = "f0000000fail"
down_revision = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade() -> None:
    op.drop_table("half_done")
'''


def test_alembic_ini_holds_no_database_url() -> None:
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "alembic.ini")
    assert not parser.has_option("alembic", "sqlalchemy.url")


async def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    tables = await run_alembic(
        empty_database_url,
        ("upgrade", "head"),
        ("downgrade", "base"),
    )
    assert tables == {"alembic_version"}
    tables = await run_alembic(empty_database_url, ("upgrade", "head"))
    assert "alembic_version" in tables


@pytest.mark.slow
async def test_command_line_upgrade_reads_the_url_from_the_settings_and_models_match(
    empty_database_url: str,
) -> None:
    result = await asyncio.to_thread(run_cli, empty_database_url, ("upgrade", "head"), ("check",))
    assert result.returncode == 0, result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


async def test_a_migration_that_fails_halfway_leaves_the_schema_as_it_was(
    empty_database_url: str, tmp_path: Path
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "f0000000fail_half_done.py").write_text(FAILING_REVISION)
    config = alembic_config()
    config.set_main_option("version_locations", str(versions))
    with pytest.raises(Exception, match="no_such_table"):
        await run_alembic(empty_database_url, ("upgrade", "f0000000fail"), config=config)
    tables = await run_alembic(empty_database_url, config=config)
    assert "half_done" not in tables


async def test_alembic_stops_on_a_bad_database_url_with_the_services_one_line_reason(
    environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environ.setenv("DATABASE_URL", "postgresql://svc:Secret@hunter2@db/app")
    with pytest.raises(SystemExit) as stopped:
        await asyncio.to_thread(command.upgrade, alembic_config(), "head")
    message = str(stopped.value.code)  # what the alembic command prints as it exits
    reason = f"{PACKAGE}: invalid settings: DATABASE_URL has an '@' in its password"
    assert message.startswith(reason)
    assert "\n" not in message
    assert "hunter2" not in message
    assert capsys.readouterr() == ("", "")


def upgrade_stops_with(environ: pytest.MonkeyPatch, url: str) -> str:
    """The one-line reason with which `alembic upgrade head` stops on ``url``."""
    environ.setenv("DATABASE_URL", url)
    with pytest.raises(SystemExit) as stopped:
        command.upgrade(alembic_config(), "head")
    message = str(stopped.value.code)  # what the alembic command prints as it exits
    assert message.startswith(f"{PACKAGE}: "), message
    assert "\n" not in message, message
    assert "hunter2" not in message, message
    return message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Nothing listens on a port that was free a moment ago (tests/core/database/
        # test_engine.py covers every other reason a connection fails).
        (
            "postgresql+asyncpg://svc:hunter2@127.0.0.1:{port}/app",
            r"nothing accepts connections at 127\.0\.0\.1:\d+; start PostgreSQL",
        ),
        (
            "postgresql+asyncpg://svc:hunter2@127.0.0.1:70000/app",
            r"DATABASE_URL has the port 70000, outside 0-65535",
        ),
        (
            "sqlite+aiosqlite:///{tmp}/no/such/folder/app.db",
            r"the folder of the SQLite database .*app\.db does not exist; create it",
        ),
    ],
    ids=["refused", "port-out-of-range", "missing-sqlite-folder"],
)
async def test_alembic_stops_on_an_unreachable_database_with_one_line_and_the_fix(
    environ: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    reason: str,
) -> None:
    url = url.format(port=free_port(), tmp=tmp_path)
    message = await asyncio.to_thread(upgrade_stops_with, environ, url)
    assert re.search(reason, message), message
    assert capsys.readouterr() == ("", "")


@pytest.mark.slow
async def test_the_alembic_command_prints_one_line_and_exits_1_when_it_cannot_connect() -> None:
    url = f"postgresql+asyncpg://svc:hunter2@127.0.0.1:{free_port()}/app"
    result = await asyncio.to_thread(run_cli, url, ("upgrade", "head"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "hunter2" not in result.stderr


async def test_env_py_runs_on_an_engine_or_an_async_engine_handed_to_it(
    empty_database_url: str, tmp_path: Path
) -> None:
    # Tools hand env.py what they have: pytest-alembic's alembic_engine fixture, for one,
    # gives an Engine or an AsyncEngine rather than a Connection.
    async_engine = create_async_engine(empty_database_url, poolclass=NullPool)
    sync_engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    try:
        for connectable in (async_engine, sync_engine):
            config = alembic_config()
            config.attributes["connection"] = connectable
            await asyncio.to_thread(command.upgrade, config, "head")
        async with async_engine.connect() as connection:
            async_tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        sync_tables = inspect(sync_engine).get_table_names()
    finally:
        await async_engine.dispose()
        sync_engine.dispose()
    assert "alembic_version" in async_tables
    assert sorted(sync_tables) == sorted(async_tables)
    config = alembic_config()
    config.attributes["connection"] = "sqlite:///not-a-connection.db"
    with pytest.raises(TypeError, match="must be a Connection, an Engine or an AsyncEngine"):
        await asyncio.to_thread(command.upgrade, config, "head")
