"""Make sure a pooled PostgreSQL connection is alive before a request gets it.

SQLAlchemy's pool_pre_ping costs three round trips with asyncpg (BEGIN, a query, ROLLBACK) on
every checkout. A connection the server has closed (restart, pg_terminate_backend, idle
timeout) is already known to be closed on our side: asyncpg saw the socket close. So a
connection used in the last ``ping_after`` seconds is only checked locally, for free; one idle
for longer gets the real round trip, which also catches a peer that vanished without closing.
A connection found dead is replaced before the request sees it. The one gap: a close that
arrives in the very loop iteration of a checkout is not seen yet; that request fails, and
the pool then replaces every connection older than the failure.
https://docs.sqlalchemy.org/en/21/core/pooling.html#custom-legacy-pessimistic-ping
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

LAST_USED = "last_used"


def check_connections_before_use(engine: AsyncEngine, *, ping_after: float) -> None:
    """Replace dead connections at checkout: a local check always, a ping after idling."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get(LAST_USED, 0.0)
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")
        if idle > ping_after:
            try:
                dbapi_connection.ping()
            except Exception as error:
                raise DisconnectionError("this connection did not answer a ping") from error

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _mark_used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[LAST_USED] = time.monotonic()
