"""The FastAPI application: lifespan, and the health check."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .core.config import ConfigurationError, get_settings
from .core.database import SessionDep, dispose_engine
{% if cookiecutter.example_domain == "meetings" %}
from .meetings.router import add_meetings_api
{% endif %}

logger = logging.getLogger(__name__)


class Health(BaseModel):
    """The answer of ``GET /health``."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, so that any Python string encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


async def validation_error(_request: Request, error: RequestValidationError) -> Response:
    """Answer 422 as FastAPI does, but never fail to encode the answer.

    The errors echo the input back, and it may hold an unpaired surrogate (JSON allows
    "\\ud800") that UTF-8 cannot encode: the default handler turns that 422 into a 500.
    """
    return ASCIIJSONResponse(
        {"detail": jsonable_encoder(error.errors())},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Start without touching the database (it may come up later); close the pool on exit."""
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
        exception_handlers={RequestValidationError: validation_error},
    )

    @app.get(
        "/health",
        responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health}},
    )
    async def health(session: SessionDep, response: Response) -> Health:
        """Answer 200 when the database answers ``SELECT 1``, 503 otherwise."""
        try:
            await session.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as error:
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
