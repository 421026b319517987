"""Traces with OpenTelemetry: off unless the standard ``OTEL_*`` variables ask for them.

Setting ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns them
on: every request becomes one trace, exported over OTLP/HTTP, with a server span and a child
span for every SQL statement (its text, never the values bound to it), and the log lines
written while serving it carry ``trace_id`` and ``span_id``. The SDK reads the rest itself:
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``.
Off, nothing is imported or installed: requests pay nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from .logs import HANDLER_NAME

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

# The service's name in traces unless OTEL_SERVICE_NAME gives another.
SERVICE_NAME = "{{ cookiecutter.project_slug }}"


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces: an OTLP endpoint, and neither the SDK nor
    the trace exporter turned off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(environ.get(name, "").strip() for name in endpoints)


class TraceIds(logging.Filter):
    """Adds the current span's ``trace_id`` and ``span_id`` to a log record, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


def start_tracing(app: FastAPI, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Trace ``app``'s requests, if the OTEL_* variables ask (before it serves); the spans go
    to ``exporter``, OTLP/HTTP unless told."""
    if not tracing_requested():
        return None
    # Imported here: a service that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create(); its own
    # attributes would win over them.
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": SERVICE_NAME})
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parentbased_always_on); the
    # exporter's endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*.
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # No spans of their own for each ASGI message sent and received: the request's is enough.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )
    for handler in logging.getLogger().handlers:
        if handler.get_name() == HANDLER_NAME:
            handler.addFilter(TraceIds())
    return provider


def trace_statements(engines: list[AsyncEngine]) -> None:
    """A span for each SQL statement ``engines`` run, if tracing (in the serving process)."""
    if not tracing_requested():
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentation declares SQLAlchemy "< 2.1" (its latest release predates 2.1); the
    # engine events it listens to are unchanged in 2.1, as tests/test_observability.py shows.
    SQLAlchemyInstrumentor().instrument(
        engines=[engine.sync_engine for engine in engines],
        tracer_provider=trace.get_tracer_provider(),
        skip_dep_check=True,
    )


@contextmanager
def untraced() -> Iterator[None]:
    """No spans for the statements run in the block, nor ever in the tasks it starts: the
    background checks of the read replicas would otherwise be a trace of their own every
    second."""
    if not tracing_requested():
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield
