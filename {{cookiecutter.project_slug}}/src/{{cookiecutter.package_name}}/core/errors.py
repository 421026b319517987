"""How the service answers errors that no route handles: bad input and an unavailable database."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy.exc
from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

logger = logging.getLogger(__name__)

# SQLSTATE classes that mean "the database cannot serve now", not "the request is wrong":
# connection exception, invalid authorization, invalid catalog (no such database),
# insufficient resources (too many connections), operator intervention (shutting down).
# https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})
BUSY = "database busy: no connection became free in time; retry later"
UNAVAILABLE = "database unavailable; retry later"


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


def unavailable_reason(error: BaseException) -> str | None:
    """Why the database could not serve, if ``error`` says so; None for any other error."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the pool's, not the builtin
        return BUSY
    if isinstance(error, ConnectionError | TimeoutError | sqlalchemy.exc.OperationalError):
        return UNAVAILABLE
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        if error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES:
            return UNAVAILABLE
    return None


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
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    RequestValidationError: validation_error,
    sqlalchemy.exc.TimeoutError: database_error,
    sqlalchemy.exc.DBAPIError: database_error,
    ConnectionError: database_error,
    TimeoutError: database_error,
}
