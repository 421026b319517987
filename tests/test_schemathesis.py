"""The OpenAPI schema tells the truth: schemathesis, with all its checks, against served bakes.

A client generated from the schema must never be surprised: every request the schema allows
is accepted (or answered 404/409 for state), every request it forbids is refused with a 4xx,
no answer is a 5xx, every answer matches its documented schema, and an unsupported method is a
405 whose ``Allow`` names every supported one. Bounded: a few dozen cases per operation, each
request with a deadline, against the default SQLite bake and the PostgreSQL bake.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import HostCookies, PostgresServer, clean_env, run, serve, tool

pytestmark = pytest.mark.slow

# JSON Schema cannot say that a segment's end_ms is not before its start_ms (a rule between
# two fields); the schema says it in words and the service answers 422. For that operation
# alone, a 422 to data that the schema allows is therefore expected.
CONFIG = """\
[[operations]]
include-path = "/transcripts/{transcript_id}/segments"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", "404", "409", "422"]
"""
# An Idempotency-Key is one client request's: a retry under it gets the first answer again,
# even when what it created has been deleted since (as the IETF draft and Stripe answer).
# Keys drawn from the header's pattern collide across unrelated cases ("0", "!"), and a case
# replayed later is a retry, whose 201 names a room that a DELETE removed meanwhile:
# schemathesis then reports "created resource not found" (ST302). So, as real clients do,
# every valid key sent is a fresh one; an invalid key is left as generated, to be refused.
HOOKS = """\
import re
import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
"""


def migrate(project: Path, database_url: str) -> None:
    run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=project,
        env=clean_env(DATABASE_URL=database_url),
    )


def schemathesis(base_url: str, folder: Path) -> None:
    """Run schemathesis' CLI on the served schema; fail with its report if it finds anything."""
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    (folder / "fresh_keys.py").write_text(HOOKS)
    run(
        [
            tool("schemathesis"),
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--request-timeout",
            "15",
        ],
        cwd=folder,  # where schemathesis imports SCHEMATHESIS_HOOKS from
        env=clean_env(SCHEMATHESIS_HOOKS="fresh_keys"),
        timeout=600,
    )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_schema_and_the_service_agree(
    host_cookies: HostCookies, request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    result = host_cookies.bake(extra_context={"database": database})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    postgres: PostgresServer | None = None
    if database == "postgresql":
        postgres = request.getfixturevalue("postgres")
        name = postgres.create_database()
        url = postgres.async_url(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    try:
        migrate(project, url)
        with serve(project, url, tmp_path / "service.log") as base_url:
            schemathesis(base_url, tmp_path)
        keys = asyncio.run(stored_keys(url))
        assert keys, "schemathesis sent no Idempotency-Key that the service kept"
        assert all(re.fullmatch("[0-9a-f]{32}", key) for key in keys), "fresh_keys did not run"
    finally:
        if postgres is not None:
            postgres.drop_database(name)


async def stored_keys(url: str) -> list[str]:
    """The Idempotency-Keys under which the service kept an answer."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list(await connection.scalars(text("SELECT key FROM idempotent_requests")))
    finally:
        await engine.dispose()


def cmdline(process: Path) -> str:
    """A process's arguments, each followed by a NUL ("" if it has ended meanwhile)."""
    try:
        return (process / "cmdline").read_text()
    except OSError:
        return ""


def test_the_suite_serves_a_bake_as_its_container_does(
    host_cookies: HostCookies, tmp_path: Path
) -> None:
    """uvicorn takes uvloop and httptools when it can import them, and this suite's environment
    has both (for the benchmarks); a bake ships with neither. So the suite's uvicorn is told
    asyncio's loop and h11, or every served test (schemathesis' too) would try a server and an
    HTTP parser that no user runs."""
    result = host_cookies.bake()
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    lock = tomllib.loads((project / "uv.lock").read_text())
    shipped = {package["name"] for package in lock["package"]}
    assert not shipped & {"uvloop", "httptools"}, "the bake ships them: see UVICORN_AS_SHIPPED"
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    migrate(project, url)
    with serve(project, url, tmp_path / "service.log") as base_url:
        assert httpx.get(f"{base_url}/readyz", timeout=30).status_code == 200
        port = base_url.rsplit(":", 1)[1]
        (server,) = [
            process
            for process in Path("/proc").iterdir()
            if process.name.isdigit() and f"\0--port\0{port}\0" in cmdline(process)
        ]
        loaded = (server / "maps").read_text()  # the shared libraries it runs
    assert "pydantic_core" in loaded  # the maps do name the service's compiled libraries
    assert "uvloop" not in loaded
    assert "httptools" not in loaded
