"""How the service answers errors that no route handles: bad input and an unavailable database."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from .database.engine import is_unavailable

logger = logging.getLogger(__name__)

BUSY = "database busy: no connection became free in time; retry later"
UNAVAILABLE = "database unavailable; retry later"


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, so that any Python string encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def json_safe(value: Any) -> Any:
    """``value`` with each non-finite float (NaN, Infinity, 1e400) as a string JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # "NaN", "Infinity" or "-Infinity"
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


async def validation_error(_request: Request, error: RequestValidationError) -> Response:
    """Answer 422 as FastAPI does, but never fail to encode the answer.

    The errors echo the input back, and it may hold what JSON cannot: a NaN or an infinite
    number (Python's JSON parser accepts them), or an unpaired surrogate ("\\ud800") that
    UTF-8 cannot encode. FastAPI's own handler turns those 422s into 500s.
    """
    return ASCIIJSONResponse(
        {"detail": json_safe(jsonable_encoder(error.errors()))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def unavailable_reason(error: BaseException) -> str | None:
    """Why the database could not serve, if ``error`` says so; None for any other error."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the pool's, not the builtin
        return BUSY
    return UNAVAILABLE if is_unavailable(error) else None


async def database_error(_request: Request, error: Exception) -> Response:
    """Answer 503 (retry later) when the database cannot serve: pool exhausted, unreachable,
    restarting. Any other database error is a bug: a 500, logged with its traceback."""
    reason = unavailable_reason(error)
    if reason is None:
        logger.error("unhandled database error", exc_info=error)
        return PlainTextResponse("Internal Server Error", status_code=500)
    # The exception type only: driver messages can hold host names or credentials.
    logger.warning("%s (%s)", reason, type(error).__name__)
    return JSONResponse(
        {"detail": reason},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


# The handlers that create_app() installs, in the form FastAPI(exception_handlers=...) takes.
# Only SQLAlchemy's own exceptions mean the database: a built-in TimeoutError or
# ConnectionError raised by anything else (an HTTP call, a cache) stays a 500. Connection
# failures are turned into database errors where connections are made (database/engine.py).
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    RequestValidationError: validation_error,
    sqlalchemy.exc.TimeoutError: database_error,
    sqlalchemy.exc.DBAPIError: database_error,
}

BODY_NOT_PARSED = {
    "description": "The body could not be parsed: not UTF-8, or nested too deeply",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"detail": {"type": "string"}}}
        }
    },
}


def document_unparsable_bodies(app: FastAPI) -> None:
    """Add to the OpenAPI schema the 400 that FastAPI answers to a body it cannot parse.

    JSON that does not decode is a 422 like any invalid input, but a body that is not UTF-8
    or nests too deeply gets a 400 that FastAPI leaves out of the schema of every route.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" in operation:
                    operation["responses"].setdefault("400", BODY_NOT_PARSED)
        return schema

    # FastAPI's documented way to extend the schema: https://fastapi.tiangolo.com/how-to/extending-openapi/
    app.openapi = openapi  # type: ignore[method-assign]
