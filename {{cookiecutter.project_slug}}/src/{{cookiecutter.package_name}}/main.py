"""The FastAPI application: lifespan, and the liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import sqlalchemy.exc
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Response, status
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from sqlalchemy import text

from .core.config import get_settings, settings_or_exit
from .core.database import dispose_engine
from .core.database.replicas import watching_replicas
from .core.database.session import get_database
from .core.errors import ANSWERS, EXCEPTION_HANDLERS, UnexpectedErrors, document_body_answers
from .core.logs import configure_logging, is_valid_request_id
from .core.metrics import RequestMetrics, measure_sessions, start_metrics
from .core.telemetry import start_tracing, trace_statements, untraced
{% if cookiecutter.example_domain == "meetings" %}
from .meetings.router import add_meetings_api
{% endif %}

logger = logging.getLogger(__name__)


class ReplicaState(BaseModel):
    """What the last check found out about a read replica."""

    state: Literal["unknown", "up", "lagging", "down"]
    lag_seconds: float | None


class Probe(BaseModel):
    """The answer of the probes ``GET /livez`` and ``GET /readyz``."""

    status: Literal["ok", "degraded", "unavailable"]
    detail: str | None = None
    # /readyz: each read replica by host:port/database (DATABASE_READ_URL).
    replicas: dict[str, ReplicaState] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Start without waiting for the database (it may come up later); check the read
    replicas in the background, if any; trace and measure, if asked; close the pools on exit."""
    settings, database = get_settings(), get_database()
    replicas = database.router.replicas if database.router is not None else []
    trace_statements([database.engine, *(replica.engine for replica in replicas)])
    metrics = start_metrics(settings.metrics_port) if settings.metrics_port else None
    async with AsyncExitStack() as watching:
        with untraced():  # for the task that checks the replicas, which starts here
            await watching.enter_async_context(watching_replicas(database.router))
        yield
    if metrics is not None:
        await asyncio.to_thread(metrics.shutdown)  # waits for its thread's loop to stop
        metrics.server_close()
    await dispose_engine()


def create_app() -> FastAPI:
    """Build the application; invalid settings stop it here with a one-line reason."""
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format, sql=settings.database_echo)
    app = FastAPI(
        title=settings.app_name,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        # FastAPI's own limit: 413 as soon as Content-Length, or the bytes received, exceed it.
        max_body_size=settings.max_request_body_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    # Bugs: logged and recorded once, answered with a plain 500 that carries the request id.
    app.add_middleware(UnexpectedErrors)
    if settings.metrics_port is not None:  # around UnexpectedErrors: its 500s count too
        app.add_middleware(RequestMetrics)
        measure_sessions(app)
    # Added last, so it runs first: every answer, CORS preflights included, has a request id
    # (the client's X-Request-ID when it sent a usable one) and so has every log line.
    app.add_middleware(CorrelationIdMiddleware, validator=is_valid_request_id)

    @app.get("/livez")
    async def livez() -> Probe:
        """Liveness: 200 while the process serves requests. No I/O, so a slow database never
        makes an orchestrator restart a healthy process."""
        return Probe(status="ok")

    @app.get("/readyz", responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Probe}})
    async def readyz(response: Response) -> Probe:
        """Readiness: 200 when the primary database answers ``SELECT 1``, 503 (retry later)
        otherwise. Replicas never make the service unready: reads fall back to the primary.
        A full disk leaves it ready but "degraded": reads still work, writes get 507."""
        database = get_database()
        replicas = {
            replica.name: ReplicaState(state=replica.state, lag_seconds=replica.lag)
            for replica in (database.router.replicas if database.router is not None else [])
        }
        try:
            async with database.reads() as session:  # the primary's
                await session.execute(text("SELECT 1"))
        except sqlalchemy.exc.SQLAlchemyError as error:
            # The exception type only: driver messages can hold host names or credentials.
            logger.warning("readiness: database unavailable (%s)", type(error).__name__)
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            response.headers["Retry-After"] = "1"
            return Probe(status="unavailable", detail="database unavailable", replicas=replicas)
        if database.storage_full:
            detail = ANSWERS["storage full"][0]
            return Probe(status="degraded", detail=detail, replicas=replicas)
        return Probe(status="ok", replicas=replicas)

{% if cookiecutter.example_domain == "meetings" %}
    add_meetings_api(app)
{% endif %}
    document_body_answers(app, settings.max_request_body_bytes)
    start_tracing(app)
    return app


app = create_app()
