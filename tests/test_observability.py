"""Seeing inside a served bake: its logs obey the flags, a bug reaches the log and the trace once.

A PostgreSQL bake (migrated once for the module) is served by real uvicorn processes; a thin
ASGI wrapper, written by the fixture outside the bake, adds one route with a bug to the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import PostgresServer, clean_env, free_port, run, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("observability")]

# Serves the bake's app with one more route: a bug that reaches the database (a NOT NULL
# column left empty), the kind of error no handler answers.
BUG_WRAPPER = """\
from sqlalchemy import text

from {package}.core.database import SessionDep
from {package}.main import app


@app.post("/bug")
async def bug(session: SessionDep) -> None:
    await session.execute(text("INSERT INTO rooms (name, capacity) VALUES (NULL, 1)"))
"""


@dataclass
class Bake:
    path: Path
    package: str
    wrapper: Path  # the folder of the wrapper module
    database_url: str


@pytest.fixture(scope="module")
def bake(
    cookies_session: Any, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bake]:
    """A PostgreSQL bake, migrated on a database of its own."""
    result = cookies_session.bake(extra_context={"database": "postgresql"})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    (package,) = [child.name for child in (path / "src").iterdir() if child.is_dir()]
    database = postgres.create_database()
    try:
        url = postgres.async_url(database)
        run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=path,
            env=clean_env(DATABASE_URL=url),
        )
        wrapper = tmp_path_factory.mktemp("wrapper")
        (wrapper / "bug_wrapper.py").write_text(BUG_WRAPPER.format(package=package))
        yield Bake(path, package, wrapper, url)
    finally:
        postgres.drop_database(database)


@dataclass
class Service:
    base_url: str
    log: Path

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (every line must be one)."""
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@contextmanager
def serve(bake: Bake, log: Path, *flags: str, **settings: str) -> Iterator[Service]:
    """The bake (with its bug route) under one uvicorn worker, JSON logs, ``settings`` set."""
    port = free_port()
    env = clean_env(
        DATABASE_URL=bake.database_url,
        LOG_FORMAT="json",
        PYTHONPATH=os.pathsep.join([str(bake.wrapper), str(bake.path / "src")]),
        **settings,
    )
    command = [sys.executable, "-m", "uvicorn", "bug_wrapper:app", "--port", str(port), *flags]
    with log.open("wb") as output, log.with_suffix(".stderr").open("wb") as errors:
        server = subprocess.Popen(command, cwd=bake.path, env=env, stdout=output, stderr=errors)
        try:
            wait_for_port(port, timeout=60)
            yield Service(f"http://127.0.0.1:{port}", log)
        finally:
            server.terminate()
            server.wait(timeout=30)


def wait_for_records(service: Service, found: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """The log records once ``found(records)`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = service.records()
        if found(records):
            return records
        time.sleep(0.05)
    pytest.fail(f"the log never showed it:\n{service.log.read_text()[-4000:]}", pytrace=False)


def test_no_access_log_and_log_level_do_what_they_say(bake: Bake, tmp_path: Path) -> None:
    # --no-access-log: not one access line, while LOG_LEVEL=INFO keeps uvicorn's own INFO lines.
    with serve(bake, tmp_path / "quiet.log", "--no-access-log", LOG_LEVEL="INFO") as service:
        request_id = uuid.uuid4().hex
        response = httpx.get(service.base_url + "/readyz", headers={"X-Request-ID": request_id})
        assert response.status_code == 200
    # uvicorn logs an access line before it sends the answer: it would be in the log by now.
    records = service.records()
    assert any(record["message"].startswith("Started server process") for record in records)
    assert any(record["message"].startswith("Finished server process") for record in records)
    assert [record for record in records if record["name"] == "uvicorn.access"] == []
    # LOG_LEVEL=WARNING: no INFO line at all, uvicorn's included; the access log is on.
    with serve(bake, tmp_path / "warning.log", LOG_LEVEL="WARNING") as service:
        assert httpx.get(service.base_url + "/livez").status_code == 200
    records = service.records()
    assert {record["level"] for record in records} <= {"WARNING", "ERROR", "CRITICAL"}, records
    # And with the access log on and LOG_LEVEL=INFO, one access line a request.
    with serve(bake, tmp_path / "access.log", LOG_LEVEL="INFO") as service:
        request_id = uuid.uuid4().hex
        httpx.get(service.base_url + "/livez", headers={"X-Request-ID": request_id})
        access = wait_for_records(
            service,
            lambda records: any(r["name"] == "uvicorn.access" for r in records),
        )
    lines = [r for r in access if r["name"] == "uvicorn.access"]
    assert [r["request_id"] for r in lines] == [request_id]
