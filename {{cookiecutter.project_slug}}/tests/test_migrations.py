"""Alembic: the async env.py, upgrade/downgrade round trips, and models matching migrations."""

from __future__ import annotations

import asyncio
import configparser
import importlib.util
import os
import re
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings

from tests.harness import free_port, settings_for
from tests.migrating import (
    PROJECT_ROOT,
    alembic_config,
    config_file_with,
    migrate_and_inspect,
    run_alembic,
    run_cli,
    start_cli,
)

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


COUNTED_REVISION = '''
"""Creates a table and counts its runs: a second run would fail or count two."""

import sqlalchemy as sa
from alembic import op

revision = "c0000000run1"
down_revision = {head!r}


def upgrade() -> None:
    op.create_table("migration_runs", sa.Column("runs", sa.Integer, nullable=False))
    op.execute("INSERT INTO migration_runs (runs) VALUES (1)")


def downgrade() -> None:
    op.drop_table("migration_runs")
'''


BLOCKING_INDEX_REVISION = '''
"""An index built the way that blocks every write to a table in use while it builds."""

from alembic import op

revision = "c0000000idx1"
down_revision = {head!r}


def upgrade() -> None:
    op.create_index("ix_accounts_email", "accounts", ["email"])


def downgrade() -> None:
    op.drop_index("ix_accounts_email", table_name="accounts")
'''


SLOW_REVISIONS = {
    "c0000000slo1": '''
"""A long statement that raises the statement timeout for itself."""

from alembic import op

revision = "c0000000slo1"
down_revision = {head!r}


def upgrade() -> None:
    op.execute("SET LOCAL statement_timeout = '30s'")
    op.execute("SELECT pg_sleep(1.5)")
''',
    "c0000000slo2": '''
"""The same long statement, within the default timeout."""

from alembic import op

revision = "c0000000slo2"
down_revision = "c0000000slo1"


def upgrade() -> None:
    op.execute("SELECT pg_sleep(1.5)")
''',
}


def shipped_head() -> str | None:
    """The newest revision the project ships (None without any)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_revision_files_sort_in_the_order_they_apply() -> None:
    # Named by date (alembic.ini's file_template): the last file is the head.
    script = ScriptDirectory.from_config(alembic_config())
    applied = [Path(revision.path).name for revision in reversed(list(script.walk_revisions()))]
    assert applied == sorted(applied)


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


@pytest.mark.slow
async def test_upgrades_started_together_run_one_at_a_time_and_each_migration_once(
    empty_database_url: str, tmp_path: Path
) -> None:
    # Pods starting together, each with an init container that migrates.
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "c0000000run1_counted.py").write_text(COUNTED_REVISION.format(head=shipped_head()))
    config_file = str(config_file_with(versions, tmp_path))
    # On SQLite a run waits for another up to the busy timeout: longer than the default 5 s
    # here, where three runs share a loaded machine.
    patience = {"DATABASE_SQLITE_BUSY_TIMEOUT_MS": "120000"}
    processes = [
        start_cli(empty_database_url, "-c", config_file, "upgrade", "head", **patience)
        for _ in range(3)
    ]
    outputs = await asyncio.gather(
        *(asyncio.to_thread(process.communicate, timeout=300) for process in processes)
    )
    assert [process.returncode for process in processes] == [0] * 3, [err for _, err in outputs]

    def state(connection: Connection) -> tuple[object, object, set[str]]:
        return (
            connection.scalar(text("SELECT sum(runs) FROM migration_runs")),
            connection.scalar(text("SELECT version_num FROM alembic_version")),
            set(inspect(connection).get_table_names()),
        )

    runs, version, tables = await migrate_and_inspect(empty_database_url, [], state)
    assert (runs, version) == (1, "c0000000run1")
    # The same schema as one run alone makes.
    config = alembic_config()
    shipped = PROJECT_ROOT / "migrations" / "versions"
    config.set_main_option("version_locations", os.pathsep.join(map(str, (shipped, versions))))
    commands = [("downgrade", "base"), ("upgrade", "head")]
    assert await migrate_and_inspect(empty_database_url, commands, state, config) == (
        1,
        "c0000000run1",
        tables,
    )


async def test_one_pooled_async_engine_runs_upgrade_downgrade_and_upgrade_again(
    empty_database_url: str,
) -> None:
    # What a tool does with the service's engine (pytest-alembic, for one): several commands
    # in a row, each of which runs on an event loop of its own.
    engine = engine_from_settings(settings_for(empty_database_url), migrating=True)
    config = alembic_config()
    config.attributes["connection"] = engine
    try:
        for name, revision in [("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head")]:
            await asyncio.to_thread(getattr(command, name), config, revision)
        async with engine.connect() as connection:
            version = await connection.scalar(text("SELECT max(version_num) FROM alembic_version"))
    finally:
        await engine.dispose()
    assert version == shipped_head()


def test_squawk_passes_the_shipped_migrations_and_stops_an_index_that_blocks_writes(
    environ: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    environ.setenv("DATABASE_URL", "postgresql+asyncpg://lint@localhost/lint")  # main() sets it
    spec = importlib.util.spec_from_file_location("lint", PROJECT_ROOT / "migrations" / "lint.py")
    assert spec is not None
    assert spec.loader is not None
    lint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lint)
    assert lint.main([]) == 0, capfd.readouterr().out
    versions = tmp_path / "versions"
    versions.mkdir()
    revision = versions / "c0000000idx1_index.py"
    revision.write_text(BLOCKING_INDEX_REVISION.format(head=shipped_head()))
    config = alembic_config()
    shipped = PROJECT_ROOT / "migrations" / "versions"
    config.set_main_option("version_locations", os.pathsep.join(map(str, (shipped, versions))))
    capfd.readouterr()
    assert lint.main([str(revision)], config) != 0
    assert "require-concurrent-index-creation" in capfd.readouterr().out


@pytest.mark.postgres_only
@pytest.mark.slow
async def test_a_long_statement_stops_at_the_statement_timeout_unless_its_migration_raises_it(
    empty_database_url: str, tmp_path: Path
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for revision, source in SLOW_REVISIONS.items():
        (versions / f"{revision}.py").write_text(source.format(head=shipped_head()))
    config_file = str(config_file_with(versions, tmp_path))
    migration = start_cli(
        empty_database_url,
        *("-c", config_file, "upgrade", "head"),
        DATABASE_MIGRATION_STATEMENT_TIMEOUT="1",
    )
    _, stderr = await asyncio.to_thread(migration.communicate, timeout=120)
    assert migration.returncode != 0
    assert "Traceback" not in stderr
    reason = stderr.strip().splitlines()[-1]
    assert reason.startswith(f"{PACKAGE}: migration gave up: it ran past"), stderr
    assert "DATABASE_MIGRATION_STATEMENT_TIMEOUT (1 s) in 'SELECT pg_sleep(1.5)'" in reason

    def version(connection: Connection) -> object:
        return connection.scalar(text("SELECT version_num FROM alembic_version"))

    # The first migration's SET LOCAL held for it alone: the second stopped.
    assert await migrate_and_inspect(empty_database_url, [], version) == "c0000000slo1"
