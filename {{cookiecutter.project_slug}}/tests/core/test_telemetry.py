"""Traces: off unless OTEL_* asks; a request's spans, its statements' below it; bugs on them.

The spans are kept in memory here; tests of the template export them over real OTLP/HTTP
from a served process.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from {{ cookiecutter.package_name }}.core.telemetry import (
    TraceIds,
    start_tracing,
    tracing_requested,
)
from {{ cookiecutter.package_name }}.main import create_app

from tests.harness import serve

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "svc"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_traces_are_off_unless_the_otel_variables_ask(
    environ: dict[str, str], requested: bool
) -> None:
    assert tracing_requested(environ) is requested


def test_log_records_carry_the_current_span_ids() -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "served", None, None)
    assert TraceIds().filter(record)
    assert not hasattr(record, "trace_id")  # no span: nothing to add
    with TracerProvider().get_tracer("test").start_as_current_span("request") as span:
        assert TraceIds().filter(record)
    context = span.get_span_context()
    assert record.__dict__["trace_id"] == f"{context.trace_id:032x}"
    assert record.__dict__["span_id"] == f"{context.span_id:016x}"


async def test_a_request_is_one_trace_with_a_span_per_statement_and_bugs_on_it(
    environ: pytest.MonkeyPatch, committed_database: str
) -> None:
    application = create_app()  # untraced: the variables are not set yet

    detail = "internal detail"

    @application.get("/fail")
    async def fail() -> None:
        raise KeyError(detail)

    environ.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)  # never reached: in memory
    exporter = InMemorySpanExporter()
    provider = start_tracing(application, exporter)
    assert provider is not None
    try:
        async with serve(application) as client:
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/fail")).status_code == 500
        provider.force_flush()
    finally:
        provider.shutdown()
        FastAPIInstrumentor.uninstrument_app(application)
        SQLAlchemyInstrumentor().uninstrument()
    spans = exporter.get_finished_spans()
    (ready,) = [span for span in spans if span.name == "GET /readyz"]
    assert ready.kind == SpanKind.SERVER
    statements = [
        span
        for span in spans
        if span.parent is not None
        and span.parent.span_id == ready.context.span_id
        and span.attributes is not None
        and "db.statement" in span.attributes
    ]
    assert [span.attributes["db.statement"] for span in statements if span.attributes] == [
        "SELECT 1"
    ]
    (failed,) = [span for span in spans if span.name == "GET /fail"]
    assert failed.status.status_code == StatusCode.ERROR
    (event,) = [event for event in failed.events if event.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "KeyError"
    assert event.attributes["exception.message"] == "KeyError"
    assert detail not in str(event.attributes)  # the type and the stack, not the message
