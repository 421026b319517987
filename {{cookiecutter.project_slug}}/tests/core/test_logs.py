"""Logging and request ids: one line per record, the request id on each, JSON on demand."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from asgi_correlation_id import correlation_id

from {{ cookiecutter.package_name }}.core.logs import formatter, is_valid_request_id
from {{ cookiecutter.package_name }}.main import create_app

from tests.harness import free_port, serve

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "{{ cookiecutter.package_name }}"


def record(message: str, *args: object) -> logging.LogRecord:
    entry = logging.LogRecord("svc", logging.WARNING, __file__, 1, message, args, None)
    entry.correlation_id = "req-7"
    return entry


def test_the_console_format_is_one_readable_line_with_the_request_id() -> None:
    line = formatter("console").format(record("database %s", "unavailable"))
    assert line.endswith("WARNING  [req-7] svc: database unavailable")
    assert "\n" not in line


def test_the_json_format_is_one_object_per_record() -> None:
    entry = record("first line\nsecond line")
    entry.color_message = "\x1b[36mcolored\x1b[0m"
    line = formatter("json").format(entry)
    assert "\n" not in line
    fields = json.loads(line)
    assert {key: fields[key] for key in ("level", "name", "request_id", "message")} == {
        "level": "WARNING",
        "name": "svc",
        "request_id": "req-7",
        "message": "first line\nsecond line",
    }
    assert "time" in fields
    assert "color_message" not in fields


@pytest.mark.parametrize(
    ("value", "usable"),
    [
        ("3f0c4a9b6c1e4f6e9d3a1b2c3d4e5f60", True),
        ("Root=1-67891233-abcdef012345678912345678", True),
        ("", False),
        ("has space", False),
        ("x" * 129, False),
        ("caf\u00e9", False),
    ],
)
def test_a_client_request_id_is_used_only_when_it_is_safe_to_log(value: str, usable: bool) -> None:
    assert is_valid_request_id(value) is usable


async def test_every_answer_carries_a_request_id_taken_from_the_client_or_made() -> None:
    application = create_app()
    seen: list[str | None] = []

    @application.get("/seen")
    async def seen_id() -> None:
        seen.append(correlation_id.get())

    async with serve(application) as client:
        given = await client.get("/seen", headers={"X-Request-ID": "trace-42"})
        made = await client.get("/seen")
        refused = await client.get("/seen", headers={"X-Request-ID": "two words"})
    assert given.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 32
    assert refused.headers["x-request-id"] not in ("two words", made.headers["x-request-id"])
    assert seen == [response.headers["x-request-id"] for response in (given, made, refused)]


def get(url: str, request_id: str) -> int:
    request = urllib.request.Request(url, headers={"X-Request-ID": request_id})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


@pytest.mark.slow
def test_json_logs_of_a_served_app_are_one_object_per_line_and_hold_no_secret(
    tmp_path: Path,
) -> None:
    # The service as production runs it: uvicorn, two workers, JSON logs; its database is
    # unreachable, so /readyz logs a warning while serving request "ready-1".
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT / "src"),
        "DATABASE_URL": "postgresql+asyncpg://svc:hunter2-secret@127.0.0.1:1/app",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
    }
    command = [
        *(sys.executable, "-m", "uvicorn", f"{PACKAGE}.main:app"),
        *("--port", str(port), "--workers", "2"),
    ]
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if get(f"{base}/livez", "live-1") == 200:
                        break
                except OSError:
                    assert time.monotonic() < deadline, stderr.read_text()
                    time.sleep(0.1)
            assert get(f"{base}/readyz", "ready-1") == 503
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    lines = stdout.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(entry, dict) for entry in records)
    access = [entry for entry in records if entry["name"] == "uvicorn.access"]
    ready = [entry for entry in access if entry["request_id"] == "ready-1"]
    assert len(ready) == 1
    assert '"GET /readyz HTTP/1.1" 503' in ready[0]["message"]
    warnings = [entry for entry in records if entry["level"] == "WARNING"]
    assert any(
        entry["request_id"] == "ready-1" and "database unavailable" in entry["message"]
        for entry in warnings
    )
    assert any(entry["message"].startswith("Started server process") for entry in records)
    assert "hunter2-secret" not in stdout.read_text() + stderr.read_text()
