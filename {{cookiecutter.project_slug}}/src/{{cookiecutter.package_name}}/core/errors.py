"""How the service answers errors that no route handles: bad input, a database that cannot
serve (503, or 507 when its storage is full), and bugs (500)."""

from __future__ import annotations

import json
import logging
import math
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy.exc
from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import trace
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .database.session import get_database
from .metrics import count_unavailable
from .unavailable import Cause, unavailable_cause

logger = logging.getLogger(__name__)

# What the client is told, and what the log line adds for whoever is on call.
ANSWERS: dict[Cause, tuple[str, str]] = {
    "pool exhausted": (
        "database busy: no connection became free in time; retry later",
        "no pooled connection became free within DATABASE_POOL_TIMEOUT",
    ),
    "locked": (
        "database busy: another writer held the lock too long; retry later",
        "SQLite's write lock was held longer than DATABASE_SQLITE_BUSY_TIMEOUT_MS",
    ),
    "storage full": (
        "database storage is full: writes are refused until space is freed",
        "the database's storage is full; free disk space (reads still work)",
    ),
    "timed out": (
        "database busy: a statement ran past its time limit; retry later",
        "a statement ran past DATABASE_STATEMENT_TIMEOUT (on a replica, the read's limit)",
    ),
    "unreachable": (
        "database unavailable; retry later",
        "the database server is unreachable or refused the connection",
    ),
}
# A connection lost during a write: if it was lost during COMMIT, the server may have stored
# the write without the service hearing of it. The client is told so, not just "retry".
WRITE_IN_DOUBT = (
    "the connection to the database was lost during this write, which may have been stored:"
    " retry with the same Idempotency-Key where the endpoint takes one, or check first",
    "the connection was lost during a write; whether it was committed is unknown",
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


async def method_not_allowed(request: Request, _error: Exception) -> Response:
    """Answer 405 with every method the path takes in ``Allow``: Starlette names only those
    of the first route whose path matched (POST /rooms, not GET)."""
    allowed = [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.routes
        )
    ]
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        headers={"Allow": ", ".join(allowed)},
    )


async def database_error(request: Request, error: Exception) -> Response:
    """Answer 503 (retry later) when the database cannot serve: pool exhausted, lock held,
    unreachable (a write: may have been stored); 507 when its storage is full. Any other
    database error is a bug: raised on, to be reported as one (UnexpectedErrors)."""
    cause = unavailable_cause(error)
    if cause is None:
        raise error
    count_unavailable(cause)
    detail, condition = ANSWERS[cause]
    lost = isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated
    if lost and request.method not in SAFE_METHODS:
        detail, condition = WRITE_IN_DOUBT
    # The exception type only: driver messages can hold host names or credentials.
    logger.warning("database %s: %s (%s)", cause, condition, type(error).__name__)
    if cause == "storage full":
        get_database().storage_full = True
        # A client retrying every second helps nobody while the disk stays full.
        status_code, retry_after = status.HTTP_507_INSUFFICIENT_STORAGE, "30"
    else:
        status_code, retry_after = status.HTTP_503_SERVICE_UNAVAILABLE, "1"
    return JSONResponse(
        {"detail": detail}, status_code=status_code, headers={"Retry-After": retry_after}
    )


class UnexpectedErrors:
    """ASGI middleware: a bug, an exception no handler answered, is logged once with its
    traceback (and the request id, trace and span ids), recorded on the request's span, and
    answered with a plain 500 that gives the request id and nothing else.

    Starlette's own last resort answers outside the request id middleware (no X-Request-ID),
    and re-raises, so that uvicorn logs the error a second time, outside the request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as error:
            report_bug(error)
            if not started:  # otherwise the client sees the answer cut short
                request_id = correlation_id.get() or "-"
                body = f"Internal Server Error (request id {request_id})"
                await PlainTextResponse(body, status_code=500)(scope, receive, send)


def report_bug(error: Exception) -> None:
    """Log ``error`` with its traceback, and record it on the current span (if tracing).

    The span gets the exception's type and stack but not its message: a database error's
    message holds the statement and may hold the values bound to it.
    """
    logger.error("unhandled error: %s", type(error).__name__, exc_info=error)
    span = trace.get_current_span()
    if span.is_recording():
        stack = "".join(traceback.format_tb(error.__traceback__)) + type(error).__qualname__
        message = {"exception.message": type(error).__name__, "exception.stacktrace": stack}
        span.record_exception(error, attributes=message, escaped=True)
        span.set_status(trace.StatusCode.ERROR, type(error).__name__)


# The handlers that create_app() installs, in the form FastAPI(exception_handlers=...) takes.
# Only SQLAlchemy's own exceptions mean the database: a built-in TimeoutError or
# ConnectionError raised by anything else (an HTTP call, a cache) stays a 500. Connection
# failures are turned into database errors where connections are made (database/engine.py).
ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    RequestValidationError: validation_error,
    status.HTTP_405_METHOD_NOT_ALLOWED: method_not_allowed,
    sqlalchemy.exc.TimeoutError: database_error,
    sqlalchemy.exc.DBAPIError: database_error,
}

DETAIL = {
    "application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}
}


def document_body_answers(app: FastAPI, max_body_bytes: int) -> None:
    """Add to the OpenAPI schema of every route with a body the 400 that FastAPI answers to
    a body it cannot parse (not UTF-8, nested too deeply; JSON that does not decode is a
    422), and the 413 for a body over MAX_REQUEST_BODY_BYTES; FastAPI leaves both out."""
    generate = app.openapi
    answers = {
        "400": "The body could not be parsed: not UTF-8, or nested too deeply",
        "413": f"The body is over {max_body_bytes:,} bytes (MAX_REQUEST_BODY_BYTES)",
    }

    def openapi() -> dict[str, Any]:
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" in operation:
                    for code, description in answers.items():
                        answer = {"description": description, "content": DETAIL}
                        operation["responses"].setdefault(code, answer)
        return schema

    # FastAPI's documented way to extend the schema: https://fastapi.tiangolo.com/how-to/extending-openapi/
    app.openapi = openapi  # type: ignore[method-assign]
