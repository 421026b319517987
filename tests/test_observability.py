"""Seeing inside a served bake: its logs obey the flags, a bug reaches the log and the trace once.

A PostgreSQL bake (migrated once for the module) is served by real uvicorn processes; a thin
ASGI wrapper, written by the fixture outside the bake, adds one route with a bug to the app.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.helpers import (
    UVICORN_AS_SHIPPED,
    HostCookies,
    PrimaryWithReplica,
    clean_env,
    free_port,
    replicated_bake,
    skip_or_fail,
    wait_for_port,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("observability")]
# In the service's database URLs (the servers trust every local login): it must never be
# exported, nor logged.
PASSWORD = "hunter2-secret"
POOL_SIZE = 2

# Serves the bake's app with two more routes: a bug that reaches the database (a NOT NULL
# column left empty), the kind of error no handler answers; and a slow statement.
BUG_WRAPPER = """\
from sqlalchemy import text

from {package}.core.database import SessionDep
from {package}.main import app


@app.post("/bug")
async def bug(session: SessionDep) -> None:
    await session.execute(text("INSERT INTO rooms (name, capacity) VALUES (NULL, 1)"))


@app.get("/slow")
async def slow(session: SessionDep) -> None:
    await session.execute(text("SELECT pg_sleep(0.2)"))
"""


@dataclass
class Bake:
    path: Path
    package: str
    wrapper: Path  # the folder of the wrapper module
    database_url: str  # on the primary
    read_url: str  # the same database on the streaming replica


@pytest.fixture(scope="module")
def bake(
    host_cookies: HostCookies, servers: PrimaryWithReplica, tmp_path_factory: pytest.TempPathFactory
) -> Bake:
    """A PostgreSQL bake, migrated on the primary (the replica replays the schema)."""
    url = servers.url("primary", "service").replace("postgres@", f"postgres:{PASSWORD}@")
    path, package = replicated_bake(host_cookies, servers, url)
    wrapper = tmp_path_factory.mktemp("wrapper")
    (wrapper / "bug_wrapper.py").write_text(BUG_WRAPPER.format(package=package))
    read_url = servers.url("replica", "service").replace("postgres@", f"postgres:{PASSWORD}@")
    return Bake(path, package, wrapper, url, read_url)


@dataclass
class ExportedSpan:
    """A span as an OTLP/HTTP exporter sent it, with its attributes as Python values."""

    span: Span
    service_name: str
    attributes: dict[str, Any]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class OTLPReceiver:
    """A real OTLP/HTTP trace receiver: decodes each POST /v1/traces with the protocol's own
    message classes and keeps its spans."""

    port: int
    spans: list[ExportedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # as received, to look for secrets
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.bodies.append(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: plain(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {a.key: plain(a.value) for a in span.attributes}
                        self.spans.append(ExportedSpan(span, resource["service.name"], attributes))

    def trace(
        self, found: Callable[[list[ExportedSpan]], bool], timeout: float = 30
    ) -> list[ExportedSpan]:
        """The spans received once ``found(spans)`` holds; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            time.sleep(0.05)
        pytest.fail(f"the spans never arrived: {[s.span.name for s in spans]}", pytrace=False)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    """An OTLP/HTTP receiver on a free port, in a thread of the test process."""
    received = OTLPReceiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            received.receive(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows the test's own output."""

    server = ThreadingHTTPServer(("127.0.0.1", received.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Service:
    base_url: str
    log: Path
    metrics_port: int = 0

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
    command += UVICORN_AS_SHIPPED
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


@pytest.fixture(scope="module")
def observed(
    bake: Bake, receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The bake served with traces sent to ``receiver``, reading from the replica."""
    log = tmp_path_factory.mktemp("observed") / "uvicorn.log"
    settings = {
        "DATABASE_READ_URL": bake.read_url,
        "DATABASE_READ_MAX_LAG": "600",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "observed-service",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: export at once, not every 5 s
        "METRICS_PORT": str(free_port()),
        "DATABASE_POOL_SIZE": str(POOL_SIZE),
    }
    with serve(bake, log, "--no-access-log", LOG_LEVEL="INFO", **settings) as service:
        service.metrics_port = int(settings["METRICS_PORT"])
        yield service


def children(spans: list[ExportedSpan], parent: ExportedSpan) -> list[ExportedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]


def test_one_request_is_one_trace_down_to_each_statement_on_the_server_that_ran_it(
    observed: Service, receiver: OTLPReceiver, servers: PrimaryWithReplica
) -> None:
    deadline = time.monotonic() + 30
    while True:
        readiness = httpx.get(observed.base_url + "/readyz").json()
        if all(r["state"] == "up" for r in readiness["replicas"].values()):
            break
        assert time.monotonic() < deadline, readiness
        time.sleep(0.1)
    created = httpx.post(observed.base_url + "/rooms", json={"name": "traced", "capacity": 3})
    assert created.status_code == 201, created.text
    room = created.json()["id"]
    while not servers.fetchval(
        "replica", f"SELECT count(*) FROM rooms WHERE id = {room}", "service"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.get(f"{observed.base_url}/rooms/{room}").status_code == 200
    spans = receiver.trace(lambda spans: any(s.span.name == "GET /rooms/{room_id}" for s in spans))
    (server,) = [s for s in spans if s.span.name == "GET /rooms/{room_id}"]
    assert server.service_name == "observed-service"
    assert server.span.kind == Span.SPAN_KIND_SERVER
    assert server.parent_id == ""  # the root of its trace
    assert server.attributes["http.status_code"] == 200
    assert server.attributes["http.route"] == "/rooms/{room_id}"
    # The statement's span is the request's child, with its text and parameters' placeholders
    # (never their values), and the replica as the server that ran it.
    (statement,) = [s for s in children(spans, server) if "db.statement" in s.attributes]
    assert statement.span.kind == Span.SPAN_KIND_CLIENT
    assert statement.attributes["db.statement"].startswith("SELECT rooms.id, rooms.name")
    assert statement.attributes["db.statement"].endswith("WHERE rooms.id = $1::BIGINT")
    assert statement.attributes["net.peer.port"] == servers.replica_port
    assert statement.span.start_time_unix_nano >= server.span.start_time_unix_nano
    assert statement.span.end_time_unix_nano <= server.span.end_time_unix_nano
    # The write went to the primary, in a trace of its own.
    (post,) = [s for s in spans if s.span.name == "POST /rooms"]
    assert post.trace_id != server.trace_id
    inserts = [s for s in children(spans, post) if s.span.name == "INSERT"]
    assert [s.attributes["net.peer.port"] for s in inserts] == [servers.primary_port]
    assert "traced" not in str(inserts[0].attributes)  # the room's name is a bound value
    # The replica's background checks are no traces of their own.
    assert all(s.parent_id for s in spans if s.span.kind == Span.SPAN_KIND_CLIENT)


def test_a_bug_is_logged_once_recorded_on_its_trace_and_answered_with_a_plain_500(
    observed: Service, receiver: OTLPReceiver
) -> None:
    request_id = uuid.uuid4().hex
    response = httpx.post(observed.base_url + "/bug", headers={"X-Request-ID": request_id})
    assert response.status_code == 500
    assert response.text == f"Internal Server Error (request id {request_id})"
    assert response.headers["x-request-id"] == request_id
    spans = receiver.trace(lambda spans: any(s.span.name == "POST /bug" for s in spans))
    (server,) = [s for s in spans if s.span.name == "POST /bug"]
    assert server.attributes["http.status_code"] == 500
    assert server.span.status.code == Status.STATUS_CODE_ERROR
    (event,) = [e for e in server.span.events if e.name == "exception"]
    recorded = {a.key: plain(a.value) for a in event.attributes}
    assert recorded["exception.type"].endswith("IntegrityError")
    assert "bug_wrapper.py" in recorded["exception.stacktrace"]  # the route's own frame
    assert recorded["exception.message"] == "IntegrityError"  # not the statement's values
    # The failed statement: its own span, an error, below the request's.
    (failed,) = [s for s in children(spans, server) if s.span.name == "INSERT"]
    assert failed.span.status.code == Status.STATUS_CODE_ERROR
    assert failed.attributes["db.statement"].startswith("INSERT INTO rooms")
    # Logged once, with the traceback, the request id and the trace's ids.
    records = wait_for_records(
        observed, lambda records: any(r.get("request_id") == request_id for r in records)
    )
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["message"] == "unhandled error: IntegrityError"
    assert error["request_id"] == request_id
    assert (error["trace_id"], error["span_id"]) == (server.trace_id, server.span_id)
    assert error["exc_info"].startswith("Traceback (most recent call last)")
    assert "null value in column" in error["exc_info"]
    assert PASSWORD not in observed.log.read_text()
    assert not any(PASSWORD.encode() in body for body in receiver.bodies)


PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: service
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@pytest.fixture(scope="module")
def prometheus(observed: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus server scraping ``observed``'s metrics every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("prometheus is not installed (apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(port=observed.metrics_port))
    port = free_port()
    command = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (folder / "prometheus.log").open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=60)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)


def query(prometheus: str, promql: str) -> float | None:
    """The one value of an instant PromQL query, or None while it has none."""
    answer = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=10)
    assert answer.status_code == 200, answer.text
    result = answer.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(
    prometheus: str, promql: str, accept: Callable[[float], bool], timeout: float = 60
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = query(prometheus, promql)
        if value is not None and accept(value):
            return value
        time.sleep(0.2)
    pytest.fail(f"{promql} never met its condition: {query(prometheus, promql)}", pytrace=False)


async def slow_load(base_url: str, clients: int, done: threading.Event) -> Counter[int]:
    """``clients`` clients GET /slow until ``done`` is set; their answers' status codes."""
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one_client() -> None:
            while not done.is_set():
                statuses[(await client.get("/slow")).status_code] += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return statuses


def test_prometheus_sees_the_pool_saturate_and_latency_rise_under_load(
    observed: Service, prometheus: str
) -> None:
    metrics = f"http://127.0.0.1:{observed.metrics_port}/metrics"
    # Scraped: the pool is known before any load.
    wait_for_value(prometheus, 'up{job="service"}', lambda value: value == 1)
    wait_for_value(prometheus, 'db_pool_size{database="primary"}', lambda v: v == POOL_SIZE)
    assert query(prometheus, 'db_pool_connections_in_use{database="primary"}') == 0
    done, statuses = threading.Event(), Counter[int]()

    def load() -> None:
        statuses.update(asyncio.run(slow_load(observed.base_url, 4 * POOL_SIZE, done)))

    loading = threading.Thread(target=load)
    loading.start()
    scrapes: list[float] = []
    try:
        # Until Prometheus sees the pool full and requests waiting for it; meanwhile the
        # metrics answer at once: a scrape never waits for the database.
        deadline = time.monotonic() + 60
        full = f'max_over_time(db_pool_connections_in_use{{database="primary"}}[1m]) >= {POOL_SIZE}'
        while query(prometheus, full) is None or query(prometheus, "db_pool_waiting > 0") is None:
            started = time.monotonic()
            scraped = httpx.get(metrics, timeout=5)
            scrapes.append(time.monotonic() - started)
            scraped.raise_for_status()
            database_lines = [line for line in scraped.text.splitlines() if "db_pool" in line]
            assert time.monotonic() < deadline, (
                f"Prometheus never saw the pool full: {database_lines}"
            )
            time.sleep(0.1)
    finally:
        done.set()
        loading.join(timeout=120)
    assert set(statuses) == {200}, statuses
    assert max(scrapes, default=0) < 1.0, scrapes
    # The slow route's latency: each request holds a connection 0.2 s, and most waited for one.
    slow = 'route="/slow",status_code="200"'
    buckets = f"sum by (le) (http_server_request_duration_seconds_bucket{{{slow}}})"
    wait_for_value(prometheus, f"histogram_quantile(0.9, {buckets})", lambda v: v >= 0.2)
    mean_wait = "sum(db_pool_wait_seconds_sum) / sum(db_pool_wait_seconds_count)"
    wait_for_value(prometheus, mean_wait, lambda value: value > 0.01)
    # The replica's state and lag are there, one series each.
    assert query(prometheus, 'db_replica_state{state="up"}') == 1
    assert query(prometheus, "db_replica_lag_seconds") is not None
