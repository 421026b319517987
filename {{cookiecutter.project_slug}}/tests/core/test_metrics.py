"""Metrics: served on METRICS_PORT from memory; requests by route, the database's own."""

from __future__ import annotations

import contextlib
import socket

import httpx
import pytest
from sqlalchemy import text

from {{ cookiecutter.package_name }}.core.database import ReadSessionDep
from {{ cookiecutter.package_name }}.core.metrics import (
    PORTS_TO_TRY,
    count_unavailable,
    start_metrics,
)
from {{ cookiecutter.package_name }}.main import create_app

from tests.harness import free_port, serve


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` in Prometheus' text format, if there is one."""
    for line in exposition.splitlines():
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return float(value)
    return None


async def test_metrics_are_served_on_their_own_port_the_next_free_one_if_taken(
    environ: pytest.MonkeyPatch,
    committed_database: str,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    environ.setenv("METRICS_PORT", str(port))
    application = create_app()

    @application.get("/read")
    async def read(session: ReadSessionDep) -> None:
        await session.execute(text("SELECT 1"))

    count_unavailable("pool exhausted")
    with socket.socket() as taken:  # as by another worker
        taken.bind(("127.0.0.1", port))
        taken.listen()
        async with serve(application) as client:
            (served,) = [r.getMessage() for r in caplog.records if r.msg == "metrics on port %d"]
            served_port = int(served.rpartition(" ")[2])
            assert served_port > port  # the next free one (usually port + 1)
            metrics = f"http://127.0.0.1:{served_port}/metrics"
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/read")).status_code == 200
            assert (await client.get("/no/such/route")).status_code == 404
            async with httpx.AsyncClient(timeout=5) as scraper:
                scraped = await scraper.get(metrics)
    assert scraped.status_code == 200
    exposition = scraped.text
    duration = "http_server_request_duration_seconds_count"
    assert sample(exposition, duration, method="GET", route="/readyz", status_code="200") == 1
    assert sample(exposition, duration, method="GET", route="unmatched", status_code="404") == 1
    assert sample(exposition, "db_pool_size", database="primary") is not None
    assert sample(exposition, "db_pool_connections_in_use", database="primary") == 0
    assert sample(exposition, "db_pool_wait_seconds_count") == 1  # /read's session
    assert sample(exposition, "db_pool_waiting") == 0
    writers_waiting = sample(exposition, "db_sqlite_writers_waiting")
    assert writers_waiting == (0 if backend == "sqlite" else None)
    unavailable = sample(exposition, "db_unavailable_responses_total", cause="pool_exhausted")
    assert unavailable is not None
    assert unavailable >= 1
    # Shut down with the service.
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient(timeout=2) as scraper:
            await scraper.get(metrics)


def test_metrics_are_not_served_when_every_port_is_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with contextlib.ExitStack() as stack:
        taken: list[int] = []
        while len(taken) < PORTS_TO_TRY:  # a run of ports, all taken (as by other workers)
            candidate = stack.enter_context(socket.socket())
            port = free_port() if not taken else taken[-1] + 1
            try:
                candidate.bind(("127.0.0.1", port))
            except OSError:
                taken.clear()
                continue
            taken.append(port)
        assert start_metrics(taken[0]) is None
    assert "metrics not served: ports" in caplog.text
