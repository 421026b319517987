"""Helpers of the template's tests: running commands and throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run(
    args: list[str] | str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output if it does not exit 0."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        shell=isinstance(args, str),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{args!r} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}",
            pytrace=False,
        )
    return result


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment for a baked project's commands: no settings leak in from outside."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "TEST_DATABASE_", "PYTEST_", "COV_", "VIRTUAL_ENV"))
    }
    env.update(overrides)
    return env


async def _execute(server: URL, statement: str) -> None:
    connection = await asyncpg.connect(
        host=server.host,
        port=server.port or 5432,
        user=server.username,
        password=server.password,
        database=server.database,
        timeout=5,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class PostgresServer:
    """The PostgreSQL server the tests may use, and a way to make throwaway databases."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def execute(self, statement: str) -> None:
        """Run one statement in autocommit mode on the server's maintenance database."""
        asyncio.run(_execute(self.url, statement))

    def create_database(self, name: str | None = None) -> str:
        """Create a database (uniquely named unless ``name`` is given); return its name."""
        name = name or f"tpl_{uuid.uuid4().hex[:16]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def async_url(self, database: str | None = None) -> str:
        """An asyncpg URL for ``database`` (default: the maintenance database)."""
        url = self.url.set(drivername="postgresql+asyncpg")
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)
