"""The FastAPI application: lifespan, and the health check."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import sqlalchemy.exc
from fastapi import FastAPI, Response, status
from pydantic import BaseModel
from sqlalchemy import text

from .core.config import ConfigurationError, get_settings
from .core.database import ReadSessionDep, dispose_engine
from .core.errors import EXCEPTION_HANDLERS
{% if cookiecutter.example_domain == "meetings" %}
from .meetings.router import add_meetings_api
{% endif %}

logger = logging.getLogger(__name__)


class Health(BaseModel):
    """The answer of ``GET /health``."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Start without touching the database (it may come up later); close the pool on exit."""
    # Everything loaded so far (models, schemas, routes) lives as long as the process: move
    # it out of the garbage collector's sight, so that the collections that requests
    # trigger do not scan it again and again.
    # https://docs.python.org/3/library/gc.html#gc.freeze
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    yield
    await dispose_engine()


def create_app() -> FastAPI:
    """Build the application; invalid settings stop it here with a one-line reason."""
    try:
        settings = get_settings()
    except ConfigurationError as error:
        raise SystemExit(f"{{ cookiecutter.package_name }}: {error}") from None
    app = FastAPI(
        title=settings.app_name,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )

    @app.get(
        "/health",
        responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health}},
    )
    async def health(session: ReadSessionDep, response: Response) -> Health:
        """Answer 200 when the database answers ``SELECT 1``, 503 otherwise."""
        try:
            await session.execute(text("SELECT 1"))
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as error:
            # The exception type only: driver messages can hold host names or credentials.
            logger.warning("health check: database unreachable (%s)", type(error).__name__)
            await session.rollback()
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
            return Health(status="unavailable", detail="database unreachable")
        return Health(status="ok")

{% if cookiecutter.example_domain == "meetings" %}
    add_meetings_api(app)
{% endif %}
    return app


app = create_app()
