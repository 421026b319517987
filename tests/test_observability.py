"""Seeing inside a served bake: its logs obey the flags, a bug reaches the log and the trace once.

A PostgreSQL bake (migrated once for the module) is served by real uvicorn processes; a thin
ASGI wrapper, written by the fixture outside the bake, adds one route with a bug to the app.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
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

from tests.helpers import PrimaryWithReplica, clean_env, free_port, run, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("observability")]
# In the service's database URLs (the servers trust every local login): it must never be
# exported, nor logged.
PASSWORD = "hunter2-secret"

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
    database_url: str  # on the primary
    read_url: str  # the same database on the streaming replica


@pytest.fixture(scope="module")
def bake(
    cookies_session: Any, servers: PrimaryWithReplica, tmp_path_factory: pytest.TempPathFactory
) -> Bake:
    """A PostgreSQL bake, migrated on the primary (the replica replays the schema)."""
    result = cookies_session.bake(extra_context={"database": "postgresql"})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    (package,) = [child.name for child in (path / "src").iterdir() if child.is_dir()]
    servers.fetchval("primary", "CREATE DATABASE service")
    url = servers.url("primary", "service").replace("postgres@", f"postgres:{PASSWORD}@")
    run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=path,
        env=clean_env(DATABASE_URL=url),
    )
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
    }
    with serve(bake, log, "--no-access-log", LOG_LEVEL="INFO", **settings) as service:
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
    assert (
        "main.py" in recorded["exception.stacktrace"]
        or "bug_wrapper" in recorded["exception.stacktrace"]
    )
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
