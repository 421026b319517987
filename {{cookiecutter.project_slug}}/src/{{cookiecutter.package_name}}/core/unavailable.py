"""Why the database cannot serve now (retry later), told from a database error: the cause
of each 503 (or 507) that core/errors.py answers, and of a replica's read retried on the
primary (core/database/replicas.py)."""

from __future__ import annotations

from typing import Literal

import sqlalchemy.exc
from sqlalchemy.exc import DBAPIError, OperationalError

# SQLSTATE classes of "cannot serve now": connection, authorization, no such database,
# insufficient resources, shutdown. https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "28", "3D", "53", "57"})

Cause = Literal["pool exhausted", "locked", "storage full", "timed out", "unreachable"]


def unavailable_cause(error: BaseException) -> Cause | None:
    """Why the database cannot serve now, if ``error`` says so (retry later); None: a bug."""
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # the pool's, not the built-in
        return "pool exhausted"
    if not isinstance(error, DBAPIError):
        return None
    sqlite_error = str(getattr(error.orig, "sqlite_errorname", ""))
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    if sqlite_error == "SQLITE_FULL" or sqlstate == "53100":  # disk full
        return "storage full"
    if sqlite_error.startswith("SQLITE_BUSY"):  # waited past the busy timeout
        return "locked"
    if sqlstate == "57014":  # query_canceled: by statement_timeout (or by hand)
        return "timed out"
    unreachable = error.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return "unreachable" if unreachable or isinstance(error, OperationalError) else None
