"""Alembic: the async env.py, upgrade/downgrade round trips, and models matching migrations."""

from __future__ import annotations

import asyncio
import configparser
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from {{ cookiecutter.package_name }}.core.database import create_engine

from tests.harness import postgres_server_url, settings_for, temporary_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture
async def empty_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A database with nothing in it, on the backend under test."""
    server_url = postgres_server_url()
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    async with temporary_database(server_url) as url:
        yield url.render_as_string(hide_password=False)


def alembic_config() -> Config:
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    return config


async def run_alembic(
    url: str, *commands: tuple[str, str], config: Config | None = None
) -> set[str]:
    """Run Alembic commands on a connection handed to env.py; return the tables left."""
    config = config or alembic_config()
    engine = create_engine(settings_for(url), sqlite_foreign_keys=False)

    def migrate(connection: Connection) -> set[str]:
        config.attributes["connection"] = connection
        for name, revision in commands:
            getattr(command, name)(config, revision)
        return set(inspect(connection).get_table_names())

    try:
        async with engine.begin() as connection:
            return await connection.run_sync(migrate)
    finally:
        await engine.dispose()


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the alembic command line the way a developer would, DATABASE_URL set."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


async def test_command_line_upgrade_reads_the_url_from_the_settings_and_models_match(
    empty_database_url: str,
) -> None:
    upgrade = await asyncio.to_thread(run_cli, empty_database_url, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    check = await asyncio.to_thread(run_cli, empty_database_url, "check")
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


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
