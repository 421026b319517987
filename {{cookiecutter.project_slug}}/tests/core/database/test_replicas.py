"""Read replicas: the lag a replica is known to have, which server a read goes to, failover.

Without a streaming replica to start, these prove the routing, and that reads always fall back
to the primary.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.package_name }}.core.database import (
    ReadSessionDep,
    get_engine,
    replicas,
)
from {{ cookiecutter.package_name }}.core.database.engine import (
    engine_from_settings,
    read_bind,
)
from {{ cookiecutter.package_name }}.core.database.replicas import (
    ReadRouter,
    Replica,
    State,
    known_lag,
)
from {{ cookiecutter.package_name }}.core.database.session import (
    get_database,
    read_only_sessionmaker,
)
from {{ cookiecutter.package_name }}.main import create_app

from tests.harness import serve, settings_for
from tests.models import Note

postgres_only = pytest.mark.postgres_only
NOWHERE = "postgresql+asyncpg://svc:hunter2-secret@127.0.0.1:1/replica"


def test_a_replica_that_replayed_everything_the_primary_wrote_has_no_lag() -> None:
    positions = deque([(10.0, 100), (11.0, 100), (12.0, 100)])  # an idle primary
    assert known_lag(positions, replayed=100, now=60.0) == 0.0


def test_lag_counts_from_the_first_primary_position_the_replica_has_not_replayed() -> None:
    positions = deque([(10.0, 100), (11.0, 250), (12.0, 400)])
    assert known_lag(positions, replayed=100, now=15.0) == 4.0  # 250 was written by 11.0
    assert known_lag(positions, replayed=300, now=15.0) == 3.0
    assert known_lag(positions, replayed=400, now=15.0) == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("sqlite+aiosqlite:///./replica.db", "must name PostgreSQL servers"),
        ("postgresql://u:p@ss@replica/app", "DATABASE_READ_URL has an '@' in its password"),
        ("postgresql+pg8000://u:p@replica/app", "DATABASE_READ_URL uses the driver 'pg8000'"),
    ],
)
def test_read_urls_are_checked_like_the_database_url(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_for("postgresql://u:p@primary/app", database_read_url=f"postgres://a/b,{raw}")


def test_read_urls_are_normalised_and_unused_with_sqlite() -> None:
    read = "postgres://u:p@replica-1/app, postgresql://u:p@replica-2:5433/app"
    settings = settings_for("postgresql://u:p@primary/app", database_read_url=read)
    assert [url.render_as_string(hide_password=False) for url in settings.read_urls] == [
        "postgresql+asyncpg://u:p@replica-1/app",
        "postgresql+asyncpg://u:p@replica-2:5433/app",
    ]
    assert settings_for("sqlite:///./app.db", database_read_url=read).read_urls == []
    assert settings_for("postgresql://u:p@primary/app").read_urls == []


def router_with(*states: State) -> ReadRouter:
    engine = engine_from_settings(settings_for("postgresql://u:p@primary/app"))  # never connects
    replicas = [Replica(f"replica-{n}", engine, state) for n, state in enumerate(states)]
    return ReadRouter(engine, replicas, max_lag=5.0)


def states(router: ReadRouter) -> list[State]:
    return [replica.state for replica in router.replicas]


def test_reads_go_to_the_replicas_that_are_up_in_turn_or_to_the_primary() -> None:
    router = router_with("up", "lagging", "up", "down", "unknown")
    picked = [router.pick() for _ in range(4)]
    assert [replica.name if replica else None for replica in picked] == [
        "replica-0",
        "replica-2",
        "replica-0",
        "replica-2",
    ]
    assert router_with("lagging", "down", "unknown").pick() is None


async def test_with_sqlite_the_read_urls_are_ignored_and_reads_go_to_the_primary(
    environ: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    environ.setenv("DATABASE_URL", "sqlite+aiosqlite:///:memory:")
    environ.setenv("DATABASE_READ_URL", NOWHERE)
    assert get_database().router is None
    assert "DATABASE_READ_URL is ignored" in caplog.text


def app_reading_notes() -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The service plus a route that reads notes, and one that wrongly writes, both through
    ReadSessionDep."""
    application = create_app()

    @application.get("/notes")
    async def notes(session: ReadSessionDep) -> list[str]:
        return list(await session.scalars(select(Note.title)))

    @application.post("/sneaky")
    async def sneaky(session: ReadSessionDep) -> None:
        session.add(Note(title="sneaky"))
        await session.flush()

    return serve(application)


@dataclass
class Servers:
    """A primary and the WAL positions the checks read: "primary", then each replica by
    host name (an exception for a server that fails to answer)."""

    primary: AsyncEngine
    answers: dict[str, int | Exception | None] = field(default_factory=dict)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Servers:
    fake = Servers(engine_from_settings(settings_for("postgresql://u:p@primary/app")))

    async def position(engine: AsyncEngine, _lsn: str) -> int | None:
        answer = fake.answers["primary" if engine is fake.primary else str(engine.url.host)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(replicas, "position", position)
    return fake


def checked_router(servers: Servers, max_lag: float) -> ReadRouter:
    replica = engine_from_settings(settings_for("postgresql://u:p@replica-1/app"))
    return ReadRouter(servers.primary, [Replica("replica-1", replica)], max_lag=max_lag)


async def test_checks_take_a_replica_out_while_it_lags_and_back_once_it_caught_up(
    servers: Servers,
) -> None:
    router = checked_router(servers, max_lag=0.05)
    assert states(router) == ["unknown"]  # no reads before the first check
    servers.answers.update({"primary": 100, "replica-1": 100})
    await router.check()
    assert (states(router), router.pick()) == (["up"], router.replicas[0])
    servers.answers["primary"] = 200  # the primary writes; the replica's replay is paused
    await router.check()
    assert states(router) == ["up"]  # behind, but not for long yet
    await asyncio.sleep(0.1)
    await router.check()
    assert states(router) == ["lagging"]
    assert router.replicas[0].lag is not None
    assert router.replicas[0].lag > 0.05
    assert router.pick() is None
    servers.answers["replica-1"] = 200  # replay resumed
    await router.check()
    assert (states(router), router.replicas[0].lag) == (["up"], 0.0)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "not a standby"),
        (OperationalError("SELECT", {}, Exception("refused")), "Operational"),
    ],
    ids=["a-primary", "unreachable"],
)
async def test_a_server_that_is_no_replica_or_does_not_answer_is_down(
    servers: Servers,
    answer: int | Exception | None,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = checked_router(servers, max_lag=5)
    servers.answers.update({"primary": 100, "replica-1": answer})
    await router.check()
    assert states(router) == ["down"]
    assert reason in caplog.text


async def test_the_background_checks_go_on_while_the_primary_is_unavailable(
    servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = checked_router(servers, max_lag=5)
    servers.answers["primary"] = OperationalError("SELECT", {}, Exception("down"))
    monkeypatch.setattr(replicas, "CHECK_EVERY", 0.01)
    watcher = asyncio.create_task(router.watch())
    await asyncio.sleep(0.1)
    assert not watcher.done()
    watcher.cancel()
    assert caplog.text.count("replica check: primary unavailable (OperationalError)") > 1


async def test_a_read_that_its_replica_fails_is_served_by_the_primary(
    committed_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On either database: the replica (a PostgreSQL server that refuses connections) is up
    # by its last check, so the read goes there first, fails, and falls back.
    replica = Replica("nowhere", engine_from_settings(settings_for(NOWHERE)), "up")
    router = ReadRouter(get_engine(), [replica], max_lag=5)
    monkeypatch.setattr(get_database(), "router", router)
    reads = read_only_sessionmaker(read_bind(replica.engine, settings_for(NOWHERE)))
    monkeypatch.setitem(get_database().replica_reads, replica.name, reads)
    try:
        async with app_reading_notes() as client:
            answers = [await client.get("/notes") for _ in range(3)]
    finally:
        await replica.engine.dispose()
    assert [(answer.status_code, answer.json()) for answer in answers] == [(200, [])] * 3
    assert states(router) == ["down"]


@postgres_only
async def test_a_primary_named_as_a_replica_is_not_used(
    committed_database: str, environ: pytest.MonkeyPatch
) -> None:
    # Only a server replaying WAL is a replica; another primary would serve other data.
    environ.setenv("DATABASE_READ_URL", committed_database)
    router = get_database().router
    assert router is not None
    await router.check()
    assert states(router) == ["down"]
    assert router.pick() is None


@postgres_only
async def test_reads_go_to_a_replica_that_is_up_and_the_probe_reports_it(
    committed_database: str, environ: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's database stands in for a replica whose checks pass; the replica has a pool
    # of its own, so the connection it lends shows which server a read went to.
    environ.setenv("DATABASE_READ_URL", f"{committed_database},{NOWHERE}")
    router = get_database().router
    assert router is not None
    standing_in, _unreachable = router.replicas
    standing_in.state, standing_in.lag = "up", 0.0

    async def checks_stood_in_for() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(router, "watch", checks_stood_in_for)
    async with app_reading_notes() as client:
        served = [await client.get("/notes") for _ in range(3)]
        pools = [engine.sync_engine.pool for engine in (standing_in.engine, get_engine())]
        lent = [pool.checkedin() for pool in pools]  # type: ignore[attr-defined]
        refused = await client.post("/sneaky")
        ready = await client.get("/readyz")
    assert [(answer.status_code, answer.json()) for answer in served] == [(200, [])] * 3
    assert lent == [1, 0]  # the replica served the reads; the primary lent nothing yet
    assert refused.status_code == 500  # ReadSessionDep refuses writes, wherever it reads
    assert ready.json()["replicas"] == {
        standing_in.name: {"state": "up", "lag_seconds": 0.0},
        "127.0.0.1:1/replica": {"state": "unknown", "lag_seconds": None},
    }
    assert "hunter2" not in ready.text
