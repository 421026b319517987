"""Every wait on the database has a limit, and waits for a connection are served in order.

A PostgreSQL bake serves real HTTP through uvicorn, straight to PostgreSQL and through a real
PgBouncer in transaction pooling mode. A statement is kept past DATABASE_STATEMENT_TIMEOUT by
a lock that the test holds on its table (a lock wait counts toward statement_timeout). The
frozen servers (SIGSTOP) of the client-side limit are in tests/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import PgBouncer, PostgresServer, clean_env, run, serve

pytestmark = pytest.mark.slow
LIMIT = 1.0  # DATABASE_STATEMENT_TIMEOUT of the served bake, seconds
SLACK = 3.0  # a loaded machine's delay on top of a limit, seconds


async def held_back(postgres: PostgresServer, database: str, base_url: str) -> list[Any]:
    """Reads and writes of rooms while the test holds an exclusive lock on the table: the
    status, seconds, Retry-After and detail of each."""
    url = postgres.url
    locker = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=database, timeout=10
    )
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE")
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

                async def request(method: str, path: str, **kwargs: Any) -> tuple[Any, ...]:
                    started = time.monotonic()
                    try:
                        answer = await client.request(method, path, **kwargs)
                    except httpx.TimeoutException:
                        return ("no answer", time.monotonic() - started, None, None)
                    seconds = time.monotonic() - started
                    detail = answer.json().get("detail")
                    return (answer.status_code, seconds, answer.headers.get("retry-after"), detail)

                body = {"name": f"room {uuid.uuid4().hex}", "capacity": 3}
                return await asyncio.gather(
                    *(request("GET", "/rooms/1") for _ in range(3)),
                    *(request("POST", "/rooms", json=body) for _ in range(3)),
                )
    finally:
        await locker.close()


async def rooms_traffic(base_url: str, count: int) -> Counter[int]:
    """``count`` creates and reads of rooms, 8 at a time; their statuses."""
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def create_and_read() -> list[int]:
            body = {"name": f"room {uuid.uuid4().hex}", "capacity": 3}
            created = await client.post("/rooms", json=body)
            read = await client.get(f"/rooms/{created.json().get('id', 0)}")
            return [created.status_code, read.status_code]

        answers = await asyncio.gather(*(create_and_read() for _ in range(count)))
    return Counter(status for pair in answers for status in pair)


def transactions_left_open(postgres: PostgresServer, database: str) -> list[Any]:
    """The sessions of ``database`` left inside a transaction (idle, or aborted by an error)."""

    async def fetch() -> list[Any]:
        url = postgres.url
        connection = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, database=database
        )
        try:
            query = "SELECT state FROM pg_stat_activity WHERE datname = $1 AND state LIKE $2"
            return list(await connection.fetch(query, database, "idle in%"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


@pytest.mark.parametrize("through", ["PostgreSQL", "PgBouncer"])
def test_a_statement_past_its_limit_answers_503_and_gives_its_connection_back_clean(
    through: str,
    migrated_project: tuple[Path, str],
    postgres: PostgresServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    project, database = migrated_project
    url, settings = postgres.async_url(database), {"DATABASE_STATEMENT_TIMEOUT": str(LIMIT)}
    if through == "PgBouncer":
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        url, settings["DATABASE_PGBOUNCER"] = bouncer.url(database), "true"
    log = tmp_path / "uvicorn.log"
    with serve(project, url, log, DATABASE_POOL_SIZE="4", **settings) as base_url:
        httpx.post(f"{base_url}/rooms", json={"name": "first", "capacity": 1}, timeout=30)
        answers = asyncio.run(held_back(postgres, database, base_url))
        # PostgreSQL cancelled each statement at its limit: 503, retry later.
        assert {answer[0] for answer in answers} == {503}, answers
        assert max(answer[1] for answer in answers) < LIMIT + SLACK, answers
        assert {answer[2] for answer in answers} == {"1"}, answers
        assert {answer[3] for answer in answers} == {
            "database busy: a statement ran past its time limit; retry later"
        }, answers
        # The same pool (4 connections) serves what comes next, and no transaction was left
        # open or aborted.
        statuses = asyncio.run(rooms_traffic(base_url, 40))
        assert statuses == {201: 40, 200: 40}, (statuses, log.read_text()[-3000:])
    assert transactions_left_open(postgres, database) == []
    output = log.read_text(errors="replace")
    assert "database timed out" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


LONG_JOBS = """\
import asyncio, json

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from {package}.core.database import dispose_engine, session_scope
from {package}.core.database.session import get_database

SLEEP = text("SELECT pg_sleep(1.5)")


async def outcome(work):
    try:
        await work()
    except DBAPIError as error:
        return "cut: " + str(error.orig).splitlines()[0]
    return "done"


async def job():
    async with session_scope() as db:
        await db.execute(SLEEP)


async def request_session():
    async with get_database().sessions() as db:  # SessionDep's
        await db.execute(SLEEP)


async def main():
    outcomes = {{"job": await outcome(job), "request": await outcome(request_session)}}
    await dispose_engine()
    print(json.dumps(outcomes))


asyncio.run(main())
"""

SLOW_REVISION = """\
from alembic import op

revision = "5105e0000001"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_sleep(1.5)")


def downgrade() -> None:
    pass
"""


def test_jobs_and_migrations_are_not_cut_by_the_requests_limit(
    cookies_session: Any, postgres: PostgresServer, postgres_database: str, tmp_path: Path
) -> None:
    result = cookies_session.bake(extra_context={"database": "postgresql"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    (package,) = [path.name for path in (project / "src").iterdir() if path.is_dir()]
    env = clean_env(DATABASE_URL=postgres_database, DATABASE_STATEMENT_TIMEOUT="0.5")
    # A migration that runs longer than the requests' limit (not DATABASE_MIGRATION_*'s).
    heads = run([sys.executable, "-m", "alembic", "heads"], cwd=project, env=env).stdout
    head = heads.split()[0]
    (project / "migrations" / "versions" / "slow.py").write_text(SLOW_REVISION.format(head=head))
    run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=project, env=env)
    script = tmp_path / "long_jobs.py"
    script.write_text(LONG_JOBS.format(package=package))
    env["PYTHONPATH"] = str(project / "src")
    output = run([sys.executable, str(script)], cwd=project, env=env, timeout=60).stdout
    assert json.loads(output.splitlines()[-1]) == {
        "job": "done",
        "request": "cut: canceling statement due to statement timeout",
    }


# Clients that each ask again as soon as they are served, as under steady load. SQLAlchemy's
# pool hands a connection given back to whichever request asks next: the client that just gave
# it back, asking again at once, overtakes all those already waiting.
CONNECTION_TURNS = """\
import asyncio, itertools, json, time
from contextlib import aclosing

from sqlalchemy import text

from {package}.core.database import dispose_engine
from {package}.core.database.session import get_read_session

arrivals, checkouts = itertools.count(), itertools.count()
overtaken, waits = [], []


async def client(requests=20):
    for _ in range(requests):
        arrived, started = next(arrivals), time.monotonic()
        async with aclosing(get_read_session()) as dependency:  # ReadSessionDep's
            session = await anext(dependency)
            await session.connection()
            overtaken.append(next(checkouts) - arrived)
            waits.append(time.monotonic() - started)
            await session.execute(text("SELECT 1"))


async def main():
    global arrivals, checkouts
    # Both connections opened first: a connection still being opened is overtaken by the
    # other's requests, and that is the time to connect, not the order of turns.
    await asyncio.gather(client(1), client(1))
    arrivals, checkouts = itertools.count(), itertools.count()
    overtaken.clear()
    waits.clear()
    await asyncio.gather(*(client() for _ in range(30)))
    await dispose_engine()
    print(json.dumps({{"overtaken": max(overtaken), "longest_wait": max(waits)}}))


asyncio.run(main())
"""


def test_requests_get_pooled_connections_in_arrival_order(
    migrated_project: tuple[Path, str], postgres: PostgresServer, tmp_path: Path
) -> None:
    project, database = migrated_project
    (package,) = [path.name for path in (project / "src").iterdir() if path.is_dir()]
    script = tmp_path / "connection_turns.py"
    script.write_text(CONNECTION_TURNS.format(package=package))
    env = clean_env(
        DATABASE_URL=postgres.async_url(database),
        DATABASE_POOL_SIZE="2",
        DATABASE_POOL_TIMEOUT="20",
        PYTHONPATH=str(project / "src"),
    )
    output = run([sys.executable, str(script)], cwd=project, env=env, timeout=120).stdout
    measured = json.loads(output.splitlines()[-1])
    # 600 checkouts by 30 clients on 2 connections: none is overtaken by more requests that
    # arrived after it than the pool has connections (SQLAlchemy's pool alone: by 27 to 108).
    assert measured["overtaken"] <= 2, measured
    assert measured["longest_wait"] < 20, measured
