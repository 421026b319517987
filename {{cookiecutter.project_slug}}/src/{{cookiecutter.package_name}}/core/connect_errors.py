"""Why no connection to the database can be made, in one line with the fix, for commands
(``alembic upgrade head``) that would otherwise end in a traceback. The service itself starts
without its database and answers 503 until it is reachable."""

from __future__ import annotations

import socket
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine


async def connect_error(engine: AsyncEngine) -> str | None:
    """Why no connection to ``engine``'s database can be made, and the fix, in one line
    without the password (for commands such as ``alembic upgrade head``); None if one can.

    A connection made stays in the pool for the caller.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        # Checked first: aiosqlite's thread outlives a failed open and can report to a
        # closed event loop.
        folder = Path(url.database).parent
        if not folder.is_dir():
            return (
                f"the folder of the SQLite database {url.database} does not exist; create it "
                f"(mkdir -p {folder}) or fix DATABASE_URL"
            )
    try:
        async with engine.connect():
            return None
    except DBAPIError as error:
        return describe_connect_error(error, url)


def describe_connect_error(error: DBAPIError, url: URL) -> str:
    """The one line of ``connect_error`` for a connection to ``url`` that failed with ``error``."""
    cause = error.orig.__cause__ if error.orig is not None else None
    sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
    where = f"{url.host}:{url.port or 5432}"
    if getattr(error.orig, "sqlite_errorname", None) == "SQLITE_CANTOPEN":
        return (
            f"cannot open the SQLite database {url.database}; check that its folder is "
            "writable, or fix DATABASE_URL"
        )
    if sqlstate == "3D000":  # invalid catalog name
        return (
            f'database "{url.database}" does not exist; create it (createdb {url.database}) '
            "or fix DATABASE_URL"
        )
    if sqlstate[:2] == "28":  # invalid authorization: the server's message names no secret
        return (
            f"the database refused the login of {url.username!r} ({error.orig}); check the "
            "user and password in DATABASE_URL"
        )
    if isinstance(cause, socket.gaierror):
        return f"the host {url.host!r} of DATABASE_URL does not resolve; fix the host name"
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"nothing accepts connections at {where}; start PostgreSQL there, or fix the "
            "host and port in DATABASE_URL"
        )
    if isinstance(cause, TimeoutError):
        return f"no answer from {where} in time; check that PostgreSQL runs there and is reachable"
    reason = type(cause or error.orig).__name__
    return f"cannot connect to the database ({reason}); check DATABASE_URL"
