"""Running Alembic from tests: on a connection handed to env.py, or as a developer would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings

from tests.harness import settings_for

PROJECT_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def alembic_config() -> Config:
    """The project's Alembic configuration, leaving pytest's logging alone."""
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    return config


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def migrate_and_inspect(
    url: str,
    commands: Sequence[tuple[str, str]],
    inspector: Callable[[Connection], T],
    config: Config | None = None,
) -> T:
    """Run Alembic commands on a connection handed to env.py, then ``inspector`` on it."""
    config = config or alembic_config()
    engine = engine_from_settings(settings_for(url), migrating=True)

    def migrate(connection: Connection) -> T:
        config.attributes["connection"] = connection
        for name, revision in commands:
            getattr(command, name)(config, revision)
        return inspector(connection)

    try:
        # Not in a transaction: Alembic commits each migration, as in production (and a
        # migration's autocommit block needs that).
        async with engine.connect() as connection:
            inspected = await connection.run_sync(migrate)
            await connection.commit()
            return inspected
    finally:
        await engine.dispose()


async def run_alembic(
    url: str, *commands: tuple[str, str], config: Config | None = None
) -> set[str]:
    """Run Alembic commands on a connection handed to env.py; return the tables left."""
    return await migrate_and_inspect(url, commands, table_names, config)


def config_file_with(versions: Path, folder: Path) -> Path:
    """A copy of alembic.ini in ``folder`` that also reads the revisions in ``versions``."""
    shipped = PROJECT_ROOT / "migrations" / "versions"
    text = (PROJECT_ROOT / "alembic.ini").read_text().replace("%(here)s", str(PROJECT_ROOT))
    locations = f"version_locations = {shipped}{os.pathsep}{versions}"
    path = folder / "alembic.ini"
    path.write_text(text.replace("[alembic]\n", f"[alembic]\n{locations}\n", 1))
    return path


def start_cli(url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``alembic *args`` in a process of its own, DATABASE_URL (and ``env``) set."""
    return subprocess.Popen(
        [sys.executable, "-c", f"from alembic.config import main; main({list(args)!r})"],
        cwd=PROJECT_ROOT,
        env={**cli_env(url), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_env(url: str) -> dict[str, str]:
    """The environment of an alembic command run by hand against ``url``."""
    return {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(PROJECT_ROOT / "src")}


def run_cli(url: str, *commands: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run alembic commands the way a developer would, DATABASE_URL set.

    One process runs them one after the other through the entry point of the ``alembic``
    command (a process per command would repeat a second of imports).
    """
    calls = "; ".join(f"main({list(command)!r})" for command in commands)
    return subprocess.run(
        [sys.executable, "-c", f"from alembic.config import main; {calls}"],
        cwd=PROJECT_ROOT,
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
