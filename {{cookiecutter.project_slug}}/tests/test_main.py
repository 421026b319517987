"""The application: start-up, lifespan and the health check."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Body
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.database import (
    create_engine,
    get_engine,
    get_read_session,
    read_only_sessionmaker,
)
from {{ cookiecutter.package_name }}.main import app, create_app

from tests.harness import settings_for

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package_name }}"


async def test_health_answers_ok_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "detail": None}


@pytest.mark.parametrize(
    "unreachable_url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/for/health.db",
        "postgresql+asyncpg://svc:hunter2-secret@127.0.0.1:1/nothing",
    ],
    ids=["sqlite", "postgresql"],
)
async def test_health_answers_503_when_the_database_is_unreachable(
    client: httpx.AsyncClient, unreachable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(settings_for(unreachable_url))

    async def unreachable_session() -> AsyncIterator[AsyncSession]:
        async with read_only_sessionmaker(engine)() as session:
            yield session

    app.dependency_overrides[get_read_session] = unreachable_session
    try:
        response = await client.get("/health")
    finally:
        await engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "detail": "database unreachable"}
    assert "database unreachable" in caplog.text
    assert "hunter2-secret" not in caplog.text + response.text


async def test_lifespan_closes_the_pool_on_shutdown(
    tmp_path: Path, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'lifespan.db'}")
    async with app.router.lifespan_context(app):
        engine = get_engine()
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
        assert engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    assert engine.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert get_engine() is not engine


def test_create_app_stops_with_one_line_on_a_bad_database_url(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("DATABASE_URL", "postgresql+pg8000://svc:hunter2-secret@db/app")
    with pytest.raises(SystemExit) as stopped:
        create_app()
    message = str(stopped.value.code)
    assert "DATABASE_URL uses the driver 'pg8000'" in message
    assert "\n" not in message
    assert "hunter2-secret" not in message


def test_the_service_refuses_to_start_on_a_bad_database_url() -> None:
    env = {**os.environ, "DATABASE_URL": "mysql://svc:hunter2-secret@db/app"}
    result = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}.main"],
        cwd=PROJECT_ROOT,
        env={**env, "PYTHONPATH": str(PROJECT_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{PACKAGE}: invalid settings: DATABASE_URL names the unsupported database "
        "'mysql'; use SQLite or PostgreSQL, e.g. sqlite+aiosqlite:///./app.db or "
        "postgresql+asyncpg://user:password@host:5432/dbname"
    ]


def test_importing_the_app_opens_no_connection() -> None:
    code = f"import {PACKAGE}.main, {PACKAGE}.core.database.session as s; print(s.get_engine.cache_info().currsize)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "0"


async def test_a_422_that_echoes_an_unpaired_surrogate_is_still_a_422(
    environ: pytest.MonkeyPatch,
) -> None:
    application = create_app()

    @application.post("/echo")
    async def echo(value: Annotated[str, Body(embed=True, min_length=1)]) -> str:
        return value

    # JSON may escape a lone surrogate; UTF-8 cannot encode it. FastAPI's default handler
    # would fail to render the error (which repeats the input) and answer 500.
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/echo", content=b'{"value": "\\ud800"}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["input"] == "\ud800"
