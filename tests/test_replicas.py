"""Read replicas against a real PostgreSQL streaming replica, through HTTP.

A PostgreSQL bake is served by uvicorn with two workers, DATABASE_URL on a throwaway primary and
DATABASE_READ_URL on its streaming replica (tests/helpers.py ``PrimaryWithReplica``). Which
server answered a read is made visible without touching the service: with WAL replay paused on
the replica, a room just created on the primary is a 404 on the replica and a 200 on the
primary. Each worker keeps its own view of the replica, so every state is awaited and every read
checked on each worker: a thin ASGI wrapper (written by the fixture, outside the bake) adds the
answering worker's process id to every response.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    UVICORN_AS_SHIPPED,
    HostCookies,
    PrimaryWithReplica,
    clean_env,
    free_port,
    replicated_bake,
    run,
    wait_for_port,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("replicas")]
WORKERS = 2
PATIENT_LAG = 600.0  # seconds: the lag guard never trips
STRICT_LAG = 1.0  # seconds: the lag guard trips soon after replay stops
CHECK_EVERY = 1.0  # the service checks its servers about once a second (replicas.py)
STATEMENT_LIMIT = 3.0  # DATABASE_STATEMENT_TIMEOUT of the served bake, seconds
READ_LIMIT = 1.0  # DATABASE_READ_STATEMENT_TIMEOUT: a replica's reads

# Serves the bake's app unchanged; only adds the answering worker's process id to responses.
WORKER_WRAPPER = """\
import os

from {package}.main import app as service

WORKER = str(os.getpid()).encode()


async def app(scope, receive, send):
    async def send_with_worker(message):
        if message["type"] == "http.response.start":
            message = {{**message, "headers": [*message["headers"], (b"x-worker", WORKER)]}}
        await send(message)

    await service(scope, receive, send_with_worker if scope["type"] == "http" else send)
"""


@dataclass
class Bake:
    path: Path
    package: str
    wrapper: Path  # the folder of the worker-id wrapper module


@pytest.fixture(scope="module")
def bake(
    host_cookies: HostCookies, servers: PrimaryWithReplica, tmp_path_factory: pytest.TempPathFactory
) -> Bake:
    """A PostgreSQL bake, migrated on the primary (the replica replays the schema)."""
    path, package = replicated_bake(host_cookies, servers, servers.url("primary", "service"))
    wrapper = tmp_path_factory.mktemp("wrapper")
    (wrapper / "replica_wrapper.py").write_text(WORKER_WRAPPER.format(package=package))
    return Bake(path, package, wrapper)


@dataclass
class Service:
    base_url: str
    replica: str  # the replica's name in /readyz
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextmanager
def serve(bake: Bake, servers: PrimaryWithReplica, log: Path, max_lag: float) -> Iterator[Service]:
    """The bake under uvicorn with WORKERS workers, reading from the replica."""
    port = free_port()
    env = clean_env(
        DATABASE_URL=servers.url("primary", "service"),
        DATABASE_READ_URL=servers.url("replica", "service"),
        DATABASE_READ_MAX_LAG=str(max_lag),
        DATABASE_POOL_SIZE="4",
        # Every checkout pings, as one after 30 s idle does: a frozen server meets the ping.
        DATABASE_POOL_PING_AFTER="0",
        DATABASE_STATEMENT_TIMEOUT=str(STATEMENT_LIMIT),
        DATABASE_READ_STATEMENT_TIMEOUT=str(READ_LIMIT),
        PYTHONPATH=os.pathsep.join([str(bake.wrapper), str(bake.path / "src")]),
    )
    command = [sys.executable, "-m", "uvicorn", "replica_wrapper:app", "--port", str(port)]
    command += ["--workers", str(WORKERS), "--log-level", "warning", "--no-access-log"]
    command += UVICORN_AS_SHIPPED
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, cwd=bake.path, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port)
            yield Service(
                f"http://127.0.0.1:{port}", f"127.0.0.1:{servers.replica_port}/service", log
            )
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def patient(
    bake: Bake, servers: PrimaryWithReplica, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with a lag limit so large that only a failure keeps reads off the replica."""
    log = tmp_path_factory.mktemp("patient") / "uvicorn.log"
    with serve(bake, servers, log, PATIENT_LAG) as service:
        yield service


@pytest.fixture(scope="module")
def strict(
    bake: Bake, servers: PrimaryWithReplica, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with DATABASE_READ_MAX_LAG=1."""
    log = tmp_path_factory.mktemp("strict") / "uvicorn.log"
    with serve(bake, servers, log, STRICT_LAG) as service:
        yield service


@pytest.fixture(autouse=True)
def replay_resumed(servers: PrimaryWithReplica) -> Iterator[None]:
    """Every test ends with the replica running and replaying, whatever happened."""
    yield
    if not (servers.replica_data / "postmaster.pid").exists():
        servers.start_replica()
    servers.fetchval("replica", "SELECT pg_wal_replay_resume()")


# --- HTTP, worker by worker -----------------------------------------------------------------


def fresh_client(base_url: str) -> httpx.Client:
    """A client that opens a new connection per request, so that requests meet every worker."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=base_url, limits=limits, timeout=10)


def each_worker(
    service: Service, path: str, accept: Callable[[httpx.Response], bool], timeout: float = 15
) -> dict[str, httpx.Response]:
    """GET ``path`` until every worker's latest answer is accepted; its answers by worker.

    Fails, with the last answers, if that does not happen within ``timeout`` seconds.
    """
    latest: dict[str, httpx.Response] = {}
    deadline = time.monotonic() + timeout
    with fresh_client(service.base_url) as client:
        while time.monotonic() < deadline:
            response = client.get(path)
            latest[response.headers["x-worker"]] = response
            if len(latest) == WORKERS and all(map(accept, latest.values())):
                return latest
            time.sleep(0.02)
    answers = {worker: (r.status_code, r.text[:300]) for worker, r in latest.items()}
    pytest.fail(
        f"GET {path}: not every worker answered as expected within {timeout} s: {answers}\n"
        f"--- uvicorn log\n{service.log_tail()}",
        pytrace=False,
    )


def replica_state(service: Service, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()["replicas"][service.replica]
    return state


def wait_for_state(service: Service, state: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until every worker's /readyz shows the replica in ``state``; their reports."""
    answers = each_worker(
        service,
        "/readyz",
        lambda r: r.status_code == 200 and replica_state(service, r)["state"] == state,
        timeout,
    )
    return [replica_state(service, answer) for answer in answers.values()]


def create_room(service: Service) -> int:
    body = {"name": f"room {uuid.uuid4().hex}", "capacity": 4}
    response = httpx.post(service.base_url + "/rooms", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def replayed_room(service: Service) -> int:
    """A room created once the replica is up, and read back on every worker (replayed)."""
    wait_for_state(service, "up")
    room = create_room(service)
    each_worker(service, f"/rooms/{room}", lambda r: r.status_code == 200)
    return room


def pause_replay(servers: PrimaryWithReplica) -> None:
    servers.fetchval("replica", "SELECT pg_wal_replay_pause()")


def resume_replay(servers: PrimaryWithReplica) -> None:
    servers.fetchval("replica", "SELECT pg_wal_replay_resume()")


def assert_reads_come_from_the_replica(service: Service, servers: PrimaryWithReplica) -> None:
    """With replay paused, a room just written is a 404 on every worker: read on the replica.

    The 404s are collected at once, long before any lag limit of a second or more can trip
    (a lag is only known from the first check after the write, a second apart).
    """
    pause_replay(servers)
    try:
        room = create_room(service)
        started = time.monotonic()
        answers = each_worker(service, f"/rooms/{room}", lambda r: r.status_code == 404)
        assert time.monotonic() - started < STRICT_LAG, "too slow to tell the servers apart"
        assert {r.status_code for r in answers.values()} == {404}
    finally:
        resume_replay(servers)
    each_worker(service, f"/rooms/{room}", lambda r: r.status_code == 200)


# --- the tests ------------------------------------------------------------------------------


def test_reads_are_served_by_the_replica(patient: Service, servers: PrimaryWithReplica) -> None:
    wait_for_state(patient, "up")
    pause_replay(servers)
    room = create_room(patient)
    # On every worker, for over a second: the room is not on the replica yet, and the primary,
    # which has it, is never asked.
    deadline = time.monotonic() + 1.5
    with fresh_client(patient.base_url) as client:
        while time.monotonic() < deadline:
            response = client.get(f"/rooms/{room}")
            assert response.status_code == 404, response.text
    each_worker(patient, f"/rooms/{room}", lambda r: r.status_code == 404)
    resume_replay(servers)
    answers = each_worker(patient, f"/rooms/{room}", lambda r: r.status_code == 200)
    assert {r.json()["id"] for r in answers.values()} == {room}
    for report in wait_for_state(patient, "up"):
        assert report["lag_seconds"] is not None
        assert report["lag_seconds"] < PATIENT_LAG


def test_a_lagging_replica_gets_no_reads_until_it_catches_up(
    strict: Service, servers: PrimaryWithReplica
) -> None:
    wait_for_state(strict, "up")
    pause_replay(servers)
    room = create_room(strict)
    # Known late once a check sees the write unreplayed for over the limit: a few checks.
    for report in wait_for_state(strict, "lagging", timeout=STRICT_LAG + 6 * CHECK_EVERY):
        assert report["lag_seconds"] > STRICT_LAG
    # Reads went to the primary, which has the room, on every worker.
    with fresh_client(strict.base_url) as client:
        statuses = Counter(client.get(f"/rooms/{room}").status_code for _ in range(20))
    assert statuses == {200: 20}, statuses
    each_worker(strict, f"/rooms/{room}", lambda r: r.status_code == 200)
    resume_replay(servers)
    for report in wait_for_state(strict, "up", timeout=6 * CHECK_EVERY):
        assert report["lag_seconds"] <= STRICT_LAG
    # And reads went back to the replica.
    assert_reads_come_from_the_replica(strict, servers)


# How long a load may take to reach its number of requests before the test fails: the count,
# not the clock, says when a load is done, so that a busy machine is slow, not wrong.
LOAD_DEADLINE = 120.0


async def read_load(
    base_url: str,
    path: str,
    outcomes: Counter[int | str],
    enough: Callable[[], bool],
    concurrency: int = 16,
) -> None:
    """GET ``path`` from ``concurrency`` clients until ``enough()``; count statuses and errors
    in ``outcomes``. Fails if that takes over LOAD_DEADLINE seconds."""
    limits = httpx.Limits(max_connections=concurrency)
    deadline = time.monotonic() + LOAD_DEADLINE
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=15) as client:

        async def reader() -> None:
            while not enough():
                assert time.monotonic() < deadline, f"the load never had enough: {outcomes}"
                try:
                    response = await client.get(path)
                except httpx.TransportError as error:
                    outcomes[type(error).__name__] += 1
                else:
                    outcomes[response.status_code] += 1

        await asyncio.gather(*(reader() for _ in range(concurrency)))


async def answered(outcomes: Counter[int | str], count: int) -> None:
    """Wait until ``outcomes`` holds ``count`` answers (LOAD_DEADLINE at the most)."""
    deadline = time.monotonic() + LOAD_DEADLINE
    while outcomes.total() < count:
        assert time.monotonic() < deadline, f"only {outcomes} within {LOAD_DEADLINE:.0f} s"
        await asyncio.sleep(0.01)


def test_a_replica_that_stops_under_load_fails_no_request(
    patient: Service, servers: PrimaryWithReplica
) -> None:
    room = replayed_room(patient)
    path = f"/rooms/{room}"

    async def stop_under_load() -> tuple[Counter[int | str], Counter[int | str]]:
        # A load, not a trickle: 100 reads before the stop, and 100 more once it is done.
        during: Counter[int | str] = Counter()
        stopped_after: list[int] = []

        def enough() -> bool:
            return bool(stopped_after) and during.total() >= stopped_after[0] + 100

        load = asyncio.create_task(read_load(patient.base_url, path, during, enough))
        await answered(during, 100)
        await asyncio.to_thread(servers.stop_replica)
        stopped_after.append(during.total())
        await load
        # Reads keep working after the stop, on the primary.
        after: Counter[int | str] = Counter()
        await read_load(patient.base_url, path, after, lambda: after.total() >= 50)
        return during, after

    during, after = asyncio.run(stop_under_load())
    assert set(during) == {200}, (during, patient.log_tail())
    assert set(after) == {200}, (after, patient.log_tail())
    assert "Traceback" not in patient.log.read_text(errors="replace"), patient.log_tail()
    for report in wait_for_state(patient, "down"):  # and /readyz stays 200
        assert report["lag_seconds"] is None or report["lag_seconds"] >= 0
    servers.start_replica()
    wait_for_state(patient, "up")
    assert_reads_come_from_the_replica(patient, servers)


def test_an_idle_primary_does_not_make_a_caught_up_replica_look_late(
    strict: Service, servers: PrimaryWithReplica
) -> None:
    wait_for_state(strict, "up")
    # No writes for several times DATABASE_READ_MAX_LAG: every answer keeps the replica up.
    # ...and at least 20 answers, however slow the machine.
    deadline = time.monotonic() + 4 * STRICT_LAG + 2 * CHECK_EVERY
    states: Counter[str] = Counter()
    with fresh_client(strict.base_url) as client:
        while time.monotonic() < deadline or states.total() < 20:
            assert time.monotonic() < deadline + LOAD_DEADLINE, states
            report = replica_state(strict, client.get("/readyz"))
            states[report["state"]] += 1
            assert report["lag_seconds"] <= STRICT_LAG, report
            time.sleep(0.1)
    assert states == {"up": states["up"]}, states


WRITE_THROUGH_A_READ_SESSION = """\
import asyncio, json

from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, InvalidRequestError

from {package}.core.config import get_settings
from {package}.core.database import dispose_engine
from {package}.core.database.engine import read_bind
from {package}.core.database.session import get_database, read_only_sessionmaker
from {package}.meetings.models import Room


async def attempt(factory, write):
    async with factory() as session:
        try:
            await write(session)
        except InvalidRequestError as error:
            return "refused by the session: " + str(error)
        except DBAPIError as error:
            return "refused by the server: " + str(error.orig).splitlines()[0]
        return "written"


async def flush(session):
    session.add(Room(name="written through a read session", capacity=1))
    await session.flush()


async def orm_insert(session):
    await session.execute(insert(Room).values(name="orm insert", capacity=1))


async def sql_insert(session):
    await session.execute(
        text("INSERT INTO rooms (name, capacity, created_at, updated_at)"
             " VALUES ('sql insert', 1, now(), now())")
    )


async def main():
    outcomes = {{}}
    # The replica's read sessions, and the primary's, which ReadSessionDep falls back to.
    database = get_database()
    replica = database.router.replicas[0].engine
    for server, engine in (("replica", replica), ("primary", database.engine)):
        factory = read_only_sessionmaker(read_bind(engine, get_settings()))
        for write in (flush, orm_insert, sql_insert)[: 3 if server == "replica" else 2]:
            outcomes[f"{{server}}: {{write.__name__}}"] = await attempt(factory, write)
    await dispose_engine()
    print(json.dumps(outcomes))


asyncio.run(main())
"""


def test_a_read_session_on_the_replica_refuses_writes(
    bake: Bake, servers: PrimaryWithReplica, tmp_path: Path
) -> None:
    script = tmp_path / "write_through_a_read_session.py"
    script.write_text(WRITE_THROUGH_A_READ_SESSION.format(package=bake.package))
    rooms_before = servers.fetchval("primary", "SELECT count(*) FROM rooms", "service")
    result = run(
        [sys.executable, str(script)],
        cwd=bake.path,
        env=clean_env(
            DATABASE_URL=servers.url("primary", "service"),
            DATABASE_READ_URL=servers.url("replica", "service"),
            PYTHONPATH=str(bake.path / "src"),
        ),
        timeout=60,
    )
    outcomes = json.loads(result.stdout.splitlines()[-1])
    # ORM writes stop in the session, before any SQL is sent, on either server ...
    for server in ("replica", "primary"):
        for write in ("flush", "orm_insert"):
            assert outcomes[f"{server}: {write}"].startswith(
                "refused by the session: this session is read-only"
            ), outcomes
    # ... and SQL the session cannot tell from a read is refused by the replica itself.
    assert outcomes["replica: sql_insert"].startswith(
        "refused by the server: cannot execute INSERT in a read-only transaction"
    ), outcomes
    assert servers.fetchval("primary", "SELECT count(*) FROM rooms", "service") == rooms_before


# --- a server that cannot serve in time ------------------------------------------------------


@contextmanager
def frozen(data: Path) -> Iterator[None]:
    """The server of ``data`` stopped (SIGSTOP, every process): it accepts TCP but never
    answers, like a server behind a network partition or on a paused VM; resumed (SIGCONT)
    on exit."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True, check=True
    ).stdout.split()
    processes = [postmaster, *map(int, children)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            os.kill(pid, signal.SIGCONT)


async def timed_requests(
    base_url: str, method: str, path: str, count: int, **kwargs: Any
) -> list[tuple[int | str, float]]:
    """``count`` requests at once, each on its own connection: status (or "no answer" within
    30 s) and seconds taken, of each."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def request() -> tuple[int | str, float]:
            started = time.monotonic()
            try:
                status: int | str = (await client.request(method, path, **kwargs)).status_code
            except httpx.TimeoutException:
                status = "no answer"
            return status, time.monotonic() - started

        return await asyncio.gather(*(request() for _ in range(count)))


# A loaded machine's delay on top of a limit, in seconds (other tests run alongside).
SLACK = 1.5


def test_a_replica_that_stops_answering_delays_reads_by_seconds_not_forever(
    patient: Service, servers: PrimaryWithReplica
) -> None:
    room = replayed_room(patient)
    with frozen(servers.replica_data):
        reads = asyncio.run(timed_requests(patient.base_url, "GET", f"/rooms/{room}", 8))
        wait_for_state(patient, "down")  # by a failed read, or a check (CHECK_TIMEOUT: 2 s)
    wait_for_state(patient, "up", timeout=30)
    # Each read was given up on the replica after DATABASE_READ_STATEMENT_TIMEOUT (and half
    # a second's grace), then served by the primary: within the limit and a second.
    assert Counter(status for status, _ in reads) == {200: 8}, reads
    assert max(seconds for _, seconds in reads) < READ_LIMIT + 1 + SLACK, reads
    assert "Traceback" not in patient.log.read_text(errors="replace"), patient.log_tail()


def test_a_primary_that_stops_answering_fails_writes_in_seconds_not_forever(
    patient: Service, servers: PrimaryWithReplica
) -> None:
    room = replayed_room(patient)
    body = {"name": f"room {uuid.uuid4().hex}", "capacity": 4}
    with frozen(servers.primary_data):
        # No more than a worker's pool (DATABASE_POOL_SIZE=4): none waits for another's turn.
        writes = asyncio.run(timed_requests(patient.base_url, "POST", "/rooms", 4, json=body))
        # Reads go on, from the replica.
        each_worker(patient, f"/rooms/{room}", lambda r: r.status_code == 200)
    # Given up after DATABASE_STATEMENT_TIMEOUT and the grace: 503, retry later.
    assert Counter(status for status, _ in writes) == {503: 4}, writes
    assert max(seconds for _, seconds in writes) < STATEMENT_LIMIT + 1 + SLACK, writes
    # The primary is back: writes work again, on every worker.
    for _ in range(2 * WORKERS):
        create_room(patient)
    assert "Traceback" not in patient.log.read_text(errors="replace"), patient.log_tail()


POOL_TIMEOUT_ON_A_REPLICA = """\
import asyncio

from sqlalchemy import text

from {package}.core.database import dispose_engine
from {package}.core.database.session import get_database, get_read_session


async def main():
    await get_database().router.check()  # the replica is up: reads go to it
    holder = get_read_session()
    held = await anext(holder)
    await held.execute(text("SELECT 1"))  # holds the replica's only pooled connection
    reader = get_read_session()
    session = await anext(reader)
    print(await session.scalar(text("SELECT 'served'")))
    await holder.aclose()
    await reader.aclose()
    await dispose_engine()


asyncio.run(main())
"""


def test_a_read_that_times_out_on_the_replicas_pool_is_served_by_the_primary(
    bake: Bake, servers: PrimaryWithReplica, tmp_path: Path
) -> None:
    script = tmp_path / "pool_timeout_on_a_replica.py"
    script.write_text(POOL_TIMEOUT_ON_A_REPLICA.format(package=bake.package))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=bake.path,
        env=clean_env(
            DATABASE_URL=servers.url("primary", "service"),
            DATABASE_READ_URL=servers.url("replica", "service"),
            DATABASE_POOL_SIZE="1",
            DATABASE_POOL_TIMEOUT="0.5",
            PYTHONPATH=str(bake.path / "src"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "served"
