"""Make sure a pooled PostgreSQL connection is alive before a request gets it.

SQLAlchemy's pool_pre_ping makes three round trips on every checkout. A connection the server
closed (restart, pg_terminate_backend, idle timeout) is already known closed here, for free;
only one idle for over ``ping_after`` seconds gets a real ping, which also catches a peer that
vanished without closing. A dead connection is replaced before a request sees it.
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
