"""Prometheus metrics on a port of their own (METRICS_PORT), off unless it is set.

Requests (rate, latency, status by route) and the database's own health: the pool, the
requests waiting for a connection, the 503s by cause, each read replica's state and lag,
the writers waiting for SQLite's write lock. Served from a thread of prometheus-client, from
what the process already knows: a scrape never waits for the event loop nor the database.
With several uvicorn workers, each serves its own on the next free port from METRICS_PORT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from functools import cache
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .database.session import Database, get_database, get_read_session, get_session
from .unavailable import Cause

logger = logging.getLogger(__name__)
PORTS_TO_TRY = 64  # one per worker, from METRICS_PORT on

REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status code",
    ["method", "route", "status_code"],
)
CONNECTION_WAIT = Histogram(
    "db_pool_wait_seconds",
    "Time a request waited for its database session: its turn at the pool's connections"
    " (on SQLite, writes: the write lock too)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WAITING = Gauge("db_pool_waiting", "Requests waiting for their turn at the pool's connections now")
UNAVAILABLE = Counter(
    "db_unavailable_responses",
    "Answers 503 (or 507) because the database could not serve, by cause",
    ["cause"],
)


def count_unavailable(cause: Cause) -> None:
    """Count one answer that the database's ``cause`` made a 503 or 507."""
    UNAVAILABLE.labels(cause.replace(" ", "_")).inc()


class RequestMetrics:
    """ASGI middleware: the duration of every HTTP request, by route template (not path, so
    that ids do not make a series each)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_DURATION.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


class DatabaseCollector(Collector):
    """The pools, the replicas and SQLite's writers, read at scrape time from memory."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        database = get_database()
        pools = {"primary": database.engine.pool}
        replicas = database.router.replicas if database.router is not None else []
        pools.update({replica.name: replica.engine.pool for replica in replicas})
        gauges = {
            "size": ("db_pool_size", "Connections the pool keeps (DATABASE_POOL_SIZE)"),
            "checkedout": ("db_pool_connections_in_use", "Connections lent out now"),
            "checkedin": ("db_pool_connections_idle", "Connections open and free now"),
            "overflow": ("db_pool_overflow", "Connections open beyond the pool's size now"),
        }
        for method, (name, documentation) in gauges.items():
            family = GaugeMetricFamily(name, documentation, labels=["database"])
            for label, pool in pools.items():
                reading = getattr(pool, method, None)  # in-memory SQLite's pool has none
                if reading is not None:
                    value = reading()
                    family.add_metric([label], max(value, 0) if method == "overflow" else value)
            yield family
        state = GaugeMetricFamily(
            "db_replica_state",
            "Each read replica's state (1: the one it is in)",
            labels=["replica", "state"],
        )
        lag = GaugeMetricFamily(
            "db_replica_lag_seconds",
            "How far each read replica is behind the primary",
            labels=["replica"],
        )
        for replica in replicas:
            for name in ("unknown", "up", "lagging", "down"):
                state.add_metric([replica.name, name], float(replica.state == name))
            if replica.lag is not None:
                lag.add_metric([replica.name], replica.lag)
        yield state
        yield lag
        yield from sqlite_writers(database)


def sqlite_writers(database: Database) -> Iterable[GaugeMetricFamily]:
    if database.write_turns is not None:
        family = GaugeMetricFamily(
            "db_sqlite_writers_waiting", "Writers of this process waiting for SQLite's write lock"
        )
        # WriteTurns counts them for itself (database/sqlite.py).
        family.add_metric([], database.write_turns.waiting)
        yield family


def waited_for(
    dependency: Callable[[], AsyncIterator[AsyncSession]],
) -> Callable[[], AsyncIterator[AsyncSession]]:
    """``dependency`` (a session for a request), counted while it waits for its turn at the
    pool's connections, and timed until it has its session."""
    session_of = asynccontextmanager(dependency)

    async def timed() -> AsyncIterator[AsyncSession]:
        started, served = time.perf_counter(), False
        WAITING.inc()
        try:
            async with session_of() as session:
                WAITING.dec()
                served = True
                CONNECTION_WAIT.observe(time.perf_counter() - started)
                yield session
        finally:
            if not served:  # no turn came (pool timeout), or the database is unavailable
                WAITING.dec()

    return timed


@cache
def measure_database() -> None:
    """Collect the database's metrics (once a process)."""
    REGISTRY.register(DatabaseCollector())


def measure_sessions(app: FastAPI) -> None:
    """Count and time the requests' waits for their database sessions."""
    for dependency in (get_session, get_read_session):
        app.dependency_overrides[dependency] = waited_for(dependency)


def start_metrics(port: int) -> WSGIServer | None:
    """Serve the metrics on ``port``, or the next free one (another worker's), in a thread;
    the server, to be shut down, or None if every port was taken."""
    measure_database()
    for candidate in range(port, port + PORTS_TO_TRY):
        try:
            server, _thread = start_http_server(candidate)
        except OSError:
            continue
        logger.info("metrics on port %d", candidate)
        return server
    logger.warning("metrics not served: ports %d-%d are taken", port, port + PORTS_TO_TRY - 1)
    return None
