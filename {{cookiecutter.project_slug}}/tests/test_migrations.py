"""Alembic: the async env.py, upgrade/downgrade round trips, and models matching migrations."""

from __future__ import annotations

import asyncio
import configparser
from pathlib import Path

import pytest

from tests.migrating import PROJECT_ROOT, alembic_config, run_alembic, run_cli

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
