"""Errors no route handles: which database errors mean "retry later", and how they are answered."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from sqlalchemy import event, select, text

from {{ cookiecutter.package_name }}.core.database import (
    ReadSessionDep,
    SessionDep,
    get_engine,
    session_scope,
)
from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings
from {{ cookiecutter.package_name }}.core.errors import ANSWERS
from {{ cookiecutter.package_name }}.core.unavailable import unavailable_cause
from {{ cookiecutter.package_name }}.main import (
    create_app,
)

from tests.harness import serve, settings_for
from tests.models import Note


class DriverError(Exception):
    """A driver exception carrying a SQLSTATE, as asyncpg's do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"driver error {sqlstate}")
        self.sqlstate = sqlstate


def dbapi_error(sqlstate: str, *, invalidated: bool = False) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.DBAPIError(
        "SELECT 1", {}, DriverError(sqlstate), connection_invalidated=invalidated
    )


def sqlite_error(sql: str) -> sqlalchemy.exc.OperationalError:
    """The error SQLite itself raises for ``sql`` on a one-page database."""
    database = sqlite3.connect(":memory:", timeout=0)
    database.execute("CREATE TABLE t (x BLOB)")
    database.execute("PRAGMA max_page_count = 2")
    try:
        database.execute(sql)
    except sqlite3.OperationalError as error:
        return sqlalchemy.exc.OperationalError(sql, {}, error)
    finally:
        database.close()
    raise AssertionError(f"{sql} did not fail")


def locked_sqlite_error(tmp_path: Path) -> sqlalchemy.exc.OperationalError:
    """The error SQLite raises when another connection holds the write lock."""
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter = sqlite3.connect(tmp_path / "locked.db", timeout=0, isolation_level=None)
        try:
            waiter.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            return sqlalchemy.exc.OperationalError("BEGIN IMMEDIATE", {}, error)
        finally:
            waiter.close()
    finally:
        holder.close()
    raise AssertionError("the second writer got the lock")


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), "pool exhausted"),
        # Built-in errors are not the database's: connection failures become database
        # errors where connections are made (test_engine.py).
        (ConnectionRefusedError(111, "Connect call failed"), None),
        (TimeoutError(), None),
        (sqlite_error("INSERT INTO t VALUES (zeroblob(100000))"), "storage full"),
        (dbapi_error("53100"), "storage full"),  # disk full
        (dbapi_error("XX000", invalidated=True), "unreachable"),
        (dbapi_error("3D000"), "unreachable"),  # the database does not exist
        (dbapi_error("28P01"), "unreachable"),  # password authentication failed
        (dbapi_error("53300"), "unreachable"),  # too many connections
        (dbapi_error("57P01"), "unreachable"),  # the server is shutting down
        (dbapi_error("57014"), "timed out"),  # cancelled by statement_timeout
        (dbapi_error("23505"), None),  # a unique violation is the service's own bug
        (dbapi_error("42P01"), None),  # so is a missing table
        (ValueError("not a database error"), None),
    ],
)
def test_unavailable_cause_tells_retry_later_from_bugs(
    error: BaseException, cause: str | None
) -> None:
    assert unavailable_cause(error) == cause


def test_a_lock_held_past_the_busy_timeout_is_named_as_such(tmp_path: Path) -> None:
    assert unavailable_cause(locked_sqlite_error(tmp_path)) == "locked"


def app_raising(error: Exception) -> FastAPI:
    application = create_app()

    @application.get("/fail")
    async def fail() -> None:
        raise error

    return application


@pytest.mark.parametrize(
    "error",
    [dbapi_error("42P01"), KeyError("internal detail")],
    ids=["database", "other"],
)
async def test_a_bug_is_a_plain_500_with_the_request_id_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    async with serve(app_raising(error)) as client:
        response = await client.get("/fail", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.text == "Internal Server Error (request id bug-1)"
    assert response.headers["x-request-id"] == "bug-1"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == f"unhandled error: {type(error).__name__}"
    assert record.exc_info is not None
    assert record.exc_info[1] is error


@pytest.mark.parametrize(
    "error",
    [TimeoutError("the payment API timed out"), ConnectionRefusedError(111, "cache is down")],
    ids=["TimeoutError", "ConnectionRefusedError"],
)
async def test_built_in_errors_from_elsewhere_are_not_a_database_outage(error: Exception) -> None:
    # An HTTP call or a cache raising the same built-in types is a bug or an outage of its
    # own, never "database unavailable".
    async with serve(app_raising(error)) as client:
        response = await client.get("/fail")
    assert response.status_code == 500
    assert response.text.startswith("Internal Server Error (request id ")


@pytest.mark.parametrize(("method", "in_doubt"), [("GET", False), ("POST", True)])
async def test_a_connection_lost_during_a_write_is_answered_as_maybe_stored(
    method: str, in_doubt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    application = create_app()
    lost = dbapi_error("08006", invalidated=True)  # connection failure, e.g. during COMMIT

    @application.api_route("/work", methods=["GET", "POST"])
    async def work() -> None:
        raise lost

    async with serve(application) as client:
        response = await client.request(method, "/work")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert ("may have been stored" in response.json()["detail"]) is in_doubt
    assert ("whether it was committed is unknown" in caplog.text) is in_doubt


def app_with_data_routes() -> FastAPI:
    application = create_app()

    @application.post("/write")
    async def write(session: SessionDep) -> None:
        await session.execute(text("SELECT 1"))

    @application.get("/read")
    async def read(session: ReadSessionDep) -> None:
        await session.execute(text("SELECT 1"))

    return application


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://svc:hunter2-secret@db.invalid/app",  # the host does not resolve
        "postgresql+asyncpg://svc:hunter2-secret@127.0.0.1:1/app",  # nothing listens
    ],
    ids=["unresolvable-host", "refused"],
)
async def test_an_unreachable_database_is_a_503_on_every_data_route(
    url: str, environ: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    environ.setenv("DATABASE_URL", url)
    with caplog.at_level(logging.WARNING):
        async with serve(app_with_data_routes()) as client:
            responses = [await client.post("/write"), await client.get("/read")]
    for response in responses:
        assert response.status_code == 503
        assert response.json() == {"detail": ANSWERS["unreachable"][0]}
        assert response.headers["retry-after"] == "1"
        assert "hunter2" not in response.text
    assert "OperationalError" in caplog.text
    assert "hunter2" not in caplog.text


async def test_a_lock_held_past_the_busy_timeout_is_a_503_that_names_it(
    tmp_path: Path, environ: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    environ.setenv("DATABASE_URL", url)
    environ.setenv("DATABASE_SQLITE_BUSY_TIMEOUT_MS", "200")
    application = create_app()

    @application.post("/write")
    async def write(db: SessionDep) -> None:
        await db.execute(text("INSERT INTO t VALUES (1)"))

    holder = engine_from_settings(settings_for(url))
    try:
        async with holder.begin() as connection:  # BEGIN IMMEDIATE: holds the write lock
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            async with serve(application) as client:
                response = await client.post("/write")
    finally:
        await holder.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.text) == {"detail": ANSWERS["locked"][0]}
    assert "DATABASE_SQLITE_BUSY_TIMEOUT_MS" in caplog.text


async def test_a_full_disk_is_a_507_that_loses_nothing_and_passes_when_space_returns(
    tmp_path: Path, environ: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite enforces a size limit of its own (max_page_count, for each connection): the
    # same "database or disk is full" as a full disk.
    path = tmp_path / "small.db"
    environ.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    limit = {"pages": 100_000}
    application = create_app()
    engine = get_engine()

    @event.listens_for(engine.sync_engine, "connect")
    def _limit_size(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    @application.post("/notes", status_code=201)
    async def add(number: int, db: SessionDep) -> None:
        db.add(Note(title=f"{number:04} " + "x" * 95))

    async with engine.begin() as connection:
        await connection.run_sync(Note.metadata.create_all)
        limit["pages"] = (await connection.exec_driver_sql("PRAGMA page_count")).scalar_one() + 2
    await engine.dispose()  # new connections, with the limit
    async with serve(application) as client:
        answers = {n: await client.post("/notes", params={"number": n}) for n in range(100)}
        full = [answer for answer in answers.values() if answer.status_code != 201]
        degraded = (await client.get("/readyz")).json()
        limit["pages"] = 100_000  # space returns
        await engine.dispose()  # new connections, with the new limit
        after = await client.post("/notes", params={"number": 9999})
        ready = (await client.get("/readyz")).json()
    acknowledged = {n for n, answer in answers.items() if answer.status_code == 201}
    async with session_scope() as db:
        stored = {int(title.split()[0]) for title in await db.scalars(select(Note.title))}
    assert full, "the database never filled up"
    assert {answer.status_code for answer in full} == {507}
    assert {answer.headers["retry-after"] for answer in full} == {"30"}
    assert full[0].json() == {"detail": ANSWERS["storage full"][0]}
    assert "database storage full" in caplog.text
    assert degraded == {
        "status": "degraded",
        "detail": ANSWERS["storage full"][0],
        "replicas": {},
    }
    assert after.status_code == 201
    assert ready == {"status": "ok", "detail": None, "replicas": {}}
    assert stored == acknowledged | {9999}
