"""Behind PgBouncer in transaction pooling mode, with several worker processes (asyncpg's
prepared statements must not outlive a transaction there).

A generated service serves real HTTP traffic through uvicorn with three workers, each with its
own connection pool, multiplexed by PgBouncer onto two server connections. With
DATABASE_PGBOUNCER=true no request fails; without it, asyncpg's prepared statements meet the
wrong server connection and requests fail, which shows that the test can see the problem.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import PgBouncer, serve

pytestmark = pytest.mark.slow
WORKERS = 3
POOL = {"DATABASE_POOL_SIZE": "4"}  # per worker


NO_ANSWER = 0  # the status counted for a request that got no answer in time


async def traffic(base_url: str, rounds: int = 60, concurrency: int = 24) -> Counter[int]:
    """Create, read, list and search rooms from many clients at once; count the statuses."""
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=15) as client:

        async def request(method: str, path: str, **kwargs: Any) -> httpx.Response | None:
            try:
                response = await client.request(method, path, **kwargs)
            except httpx.TransportError:
                statuses[NO_ANSWER] += 1
                return None
            statuses[response.status_code] += 1
            return response

        async def client_round() -> None:
            body = {"name": f"room {uuid.uuid4().hex}", "capacity": 5}
            created = await request("POST", "/rooms", json=body)
            if created is not None and created.status_code == 201:
                room_id = created.json()["id"]
                for path in (
                    f"/rooms/{room_id}",
                    "/rooms?limit=5",
                    f"/transcripts?room_id={room_id}",
                ):
                    await request("GET", path)

        for _ in range(rounds // concurrency + 1):
            await asyncio.gather(*(client_round() for _ in range(concurrency)))
    return statuses


def test_with_database_pgbouncer_no_request_fails(
    migrated_project: tuple[Path, str], pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    project, database = migrated_project
    log = tmp_path / "uvicorn.log"
    url = pgbouncer.url(database)
    with serve(project, url, log, WORKERS, **POOL, DATABASE_PGBOUNCER="true") as base_url:
        statuses = asyncio.run(traffic(base_url))
    output = log.read_text(errors="replace")
    assert set(statuses) <= {200, 201}, (statuses, output[-3000:])
    assert sum(statuses.values()) > 200
    assert "prepared statement" not in output


def test_without_it_pgbouncer_refuses_the_services_connections(
    migrated_project: tuple[Path, str], pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    project, database = migrated_project
    log = tmp_path / "uvicorn.log"
    # PgBouncer refuses statement_timeout (DATABASE_STATEMENT_TIMEOUT) as a startup parameter:
    # the service cannot connect, and says so with 503s rather than failing now and then.
    with serve(project, pgbouncer.url(database), log, WORKERS, **POOL) as base_url:
        statuses = asyncio.run(traffic(base_url, rounds=24))
        ready = httpx.get(f"{base_url}/readyz", timeout=15)
    assert set(statuses) == {503}, statuses
    assert ready.status_code == 503, ready.text


def test_without_it_prepared_statements_meet_the_wrong_connection(
    migrated_project: tuple[Path, str], pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    project, database = migrated_project
    log = tmp_path / "uvicorn.log"
    # Without the time limit, which PgBouncer would refuse (see above).
    settings = {"DATABASE_STATEMENT_TIMEOUT": "0"}
    url = pgbouncer.url(database)
    with serve(project, url, log, WORKERS, **POOL, **settings) as base_url:
        statuses = asyncio.run(traffic(base_url))
    output = log.read_text(errors="replace")
    # Requests fail, or hang until the client gives up: a statement prepared on one server
    # connection and run on another can leave asyncpg waiting for an answer that never comes.
    assert statuses[500] + statuses[NO_ANSWER] > 0, statuses
    assert "prepared statement" in output
