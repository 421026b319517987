"""The application: start-up, lifespan, the probes, and answers to any input."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import Body, FastAPI

from {{ cookiecutter.package_name }}.core.config import get_settings
from {{ cookiecutter.package_name }}.core.database import get_engine
from {{ cookiecutter.package_name }}.core.database.session import get_database
from {{ cookiecutter.package_name }}.main import app, create_app

from tests.harness import serve, served

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package_name }}"


async def test_the_probes_answer_ok_when_the_database_answers(committed_database: str) -> None:
    async with serve(app) as client:
        for probe in ("/livez", "/readyz"):
            response = await client.get(probe)
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "detail": None, "replicas": {}}


@pytest.mark.parametrize(
    "unreachable_url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/for/ready.db",
        "postgresql+asyncpg://svc:hunter2-secret@127.0.0.1:1/nothing",
    ],
    ids=["sqlite", "postgresql"],
)
async def test_readiness_fails_and_liveness_holds_when_the_database_is_unreachable(
    environ: pytest.MonkeyPatch, unreachable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ.setenv("DATABASE_URL", unreachable_url)
    async with serve(create_app()) as client:
        response = await client.get("/readyz")
        alive = await client.get("/livez")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "status": "unavailable",
        "detail": "database unavailable",
        "replicas": {},
    }
    assert alive.status_code == 200
    assert "readiness: database unavailable" in caplog.text
    assert "hunter2-secret" not in caplog.text + response.text


async def test_lifespan_closes_the_pool_on_shutdown(
    tmp_path: Path, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'lifespan.db'}")
    async with app.router.lifespan_context(app):
        engine = get_engine()
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
        assert engine.sync_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    assert engine.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert get_engine() is not engine


def test_create_app_stops_with_one_line_on_a_bad_database_url(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("DATABASE_URL", "postgresql+pg8000://svc:hunter2-secret@db/app")
    with pytest.raises(SystemExit) as stopped:
        create_app()
    message = str(stopped.value.code)
    assert "DATABASE_URL uses the driver 'pg8000'" in message
    assert "\n" not in message
    assert "hunter2-secret" not in message


@pytest.mark.slow
def test_the_service_refuses_to_start_on_a_bad_database_url() -> None:
    env = {**os.environ, "DATABASE_URL": "mysql://svc:hunter2-secret@db/app"}
    result = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}.main"],
        cwd=PROJECT_ROOT,
        env={**env, "PYTHONPATH": str(PROJECT_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"{PACKAGE}: invalid settings: DATABASE_URL names the unsupported database "
        "'mysql'; use SQLite or PostgreSQL, e.g. sqlite+aiosqlite:///./app.db or "
        "postgresql+asyncpg://user:password@host:5432/dbname"
    ]


def test_building_the_app_opens_no_connection(environ: pytest.MonkeyPatch) -> None:
    # Importing main builds the app; the engine and its pool come with the lifespan or the
    # first request, in the process that serves.
    create_app()
    assert get_database.cache_info().currsize == 0


def app_with_a_body_route() -> FastAPI:
    """The service plus a route whose body is one integer and one string."""
    application = create_app()

    @application.post("/echo")
    async def echo(
        number: Annotated[int, Body()], text: Annotated[str, Body(min_length=1)]
    ) -> dict[str, int | str]:
        return {"number": number, "text": text}

    return application


async def test_a_422_that_echoes_an_unpaired_surrogate_is_still_a_422() -> None:
    # JSON may escape a lone surrogate; UTF-8 cannot encode it. FastAPI's default handler
    # would fail to render the error (which repeats the input) and answer 500.
    transport = httpx.ASGITransport(app=app_with_a_body_route(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/echo",
            content=b'{"number": "\\ud800", "text": "ok"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["input"] == "\ud800"


def post_on_one_connection(base_url: str, bodies: list[bytes]) -> list[tuple[int, Any, bool]]:
    """POST each body to /echo over one keep-alive connection, as a browser or proxy would.

    Returns (status, JSON answer, whether the connection was still the first one) for each.
    """
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    answers = []
    try:
        connection.connect()
        first = connection.sock
        for body in bodies:
            connection.request(
                "POST", "/echo", body=body, headers={"content-type": "application/json"}
            )
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read()), connection.sock is first))
    finally:
        connection.close()
    return answers


async def test_a_non_finite_number_is_a_422_and_the_connection_lives_on() -> None:
    # Python's JSON parser reads NaN, Infinity and 1e400 as floats; the 422 echoes them, and
    # JSON cannot hold them. FastAPI's own handler fails there: a 500, and the server then
    # drops the client's keep-alive connection.
    numbers = ["NaN", "Infinity", "-Infinity", "1e400"]
    bodies = [
        body % number.encode()
        for number in numbers
        for body in (b'{"number": %s, "text": "a"}', b'{"number": 1, "text": %s}')
    ]
    async with served(app_with_a_body_route()) as base_url:
        answers = await asyncio.to_thread(
            post_on_one_connection, base_url, [*bodies, b'{"number": 2, "text": "fine"}']
        )
    assert [status for status, _, _ in answers] == [422] * len(bodies) + [200]
    assert all(same_connection for _, _, same_connection in answers)
    echoed = [
        (answer["detail"][0]["loc"][1], answer["detail"][0]["input"])
        for _, answer, _ in answers[:-1]
    ]
    assert echoed == [
        (field, json.dumps(float(number))) for number in numbers for field in ("number", "text")
    ]
    assert answers[-1][1] == {"number": 2, "text": "fine"}


async def test_every_answer_to_an_unparsable_body_is_in_the_openapi_schema() -> None:
    application = app_with_a_body_route()
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    bodies = {
        "not UTF-8": b'{"number": 1, "text": "\xff"}',
        "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
        "not JSON": b'{"number": 1,',
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        schema = (await client.get("/openapi.json")).json()
        undocumented = []
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if "requestBody" not in operation:
                    continue
                url = path.replace("{", "").replace("}", "").replace("_id", "1")
                for name, body in bodies.items():
                    response = await client.request(
                        method, url, content=body, headers={"content-type": "application/json"}
                    )
                    if str(response.status_code) not in operation["responses"]:
                        undocumented.append((method, path, name, response.status_code))
    assert "/echo" in schema["paths"]
    assert undocumented == []


async def post_raw(base_url: str, head: bytes, body: bytes, chunks: int) -> tuple[bytes, int]:
    """Send ``head``, then ``body`` up to ``chunks`` times, stopping as soon as the server
    answers; return the answer's status line and how many chunks went out."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    sent = 0
    try:
        writer.write(head)
        answer = asyncio.create_task(reader.readline())
        while sent < chunks and not answer.done():
            writer.write(body)
            await writer.drain()
            sent += 1
            await asyncio.sleep(0)
        return await asyncio.wait_for(answer, timeout=30), sent
    finally:
        writer.close()


async def test_a_body_over_the_limit_is_a_413_before_it_is_read_whole(
    environ: pytest.MonkeyPatch,
) -> None:
    # Declared too big: the answer comes before the body. 100 MB are announced; 1 MB is sent
    # at most (a server that waited for the whole body would never answer in time).
    environ.setenv("MAX_REQUEST_BODY_BYTES", "1000000")
    application = app_with_a_body_route()
    declared = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    async with served(application) as base_url:
        status, _ = await post_raw(
            base_url, declared + b"Content-Length: 100000000\r\n\r\n", b"x" * 10_000, 100
        )
        # Not declared (chunked): refused once the bytes received pass the limit.
        chunk = b"%x\r\n%s\r\n" % (64_000, b"x" * 64_000)
        chunked, sent = await post_raw(
            base_url, declared + b"Transfer-Encoding: chunked\r\n\r\n", chunk, 1_000
        )
    assert status.startswith(b"HTTP/1.1 413"), status
    assert chunked.startswith(b"HTTP/1.1 413"), chunked
    assert sent < 100  # 64 MB were on offer: the server stopped reading near 1 MB
    documented = application.openapi()["paths"]["/echo"]["post"]["responses"]["413"]
    assert documented["description"] == "The body is over 1,000,000 bytes (MAX_REQUEST_BODY_BYTES)"


async def test_cors_answers_only_the_configured_origins(environ: pytest.MonkeyPatch) -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with serve(create_app()) as client:
        closed = await client.options("/readyz", headers=preflight)
    environ.setenv("CORS_ORIGINS", "https://app.example.com, http://localhost:5173")
    get_settings.cache_clear()
    async with serve(create_app()) as client:
        allowed = await client.options("/readyz", headers=preflight)
        other = await client.options(
            "/readyz", headers={**preflight, "Origin": "https://evil.example.com"}
        )
        simple = await client.get("/livez", headers={"Origin": "http://localhost:5173"})
    assert "access-control-allow-origin" not in closed.headers
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
