"""Reads from PostgreSQL streaming replicas (DATABASE_READ_URL), with a lag guard and failover.

Each worker checks its servers about once a second: a replica lags by the time since the
primary first wrote WAL it has not replayed. Reads take the replicas that are up and within
DATABASE_READ_MAX_LAG in turn; one that fails a read (retried on the primary) or a check is
out until its next good check."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Result, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import ORMExecuteState

from ..config import Settings, get_settings
from ..unavailable import unavailable_cause
from .engine import engine_from_settings, read_bind

logger = logging.getLogger(__name__)
CHECK_EVERY = 1.0  # seconds between two checks of every server
CHECK_TIMEOUT = 2.0  # a server slower than this to answer a check is down
State = Literal["unknown", "up", "lagging", "down"]


@dataclass
class Replica:
    """One replica and what the last check or read found out about it."""

    name: str  # host:port/database, never the password
    engine: AsyncEngine
    state: State = "unknown"  # no reads before the first check
    lag: float | None = None  # seconds


def known_lag(primary_positions: deque[tuple[float, int]], replayed: int, now: float) -> float:
    """Seconds since the primary first wrote WAL beyond ``replayed``; 0 when caught up."""
    for seen_at, position in primary_positions:
        if position > replayed:
            return now - seen_at
    return 0.0


@dataclass
class ReadRouter:
    """Chooses the server of each read; keeps the replicas' states current."""

    primary: AsyncEngine
    replicas: list[Replica]
    max_lag: float
    _positions: deque[tuple[float, int]] = field(default_factory=deque)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self) -> Replica | None:
        """A replica that is up, in turn; None means: read from the primary."""
        usable = [replica for replica in self.replicas if replica.state == "up"]
        return usable[next(self._turn) % len(usable)] if usable else None

    def set_state(self, replica: Replica, state: State, reason: str) -> None:
        if state != replica.state:
            log = logger.info if state == "up" else logger.warning
            log("read replica %s is %s (%s)", replica.name, state, reason)
        replica.state = state

    async def check(self) -> None:
        """Note the primary's WAL position, then check every replica against it."""
        now = time.monotonic()
        written = await position(self.primary, "pg_current_wal_lsn()")
        self._positions.append((now, written or 0))  # never NULL on a primary
        while now - self._positions[0][0] > 2 * self.max_lag + 5 * CHECK_EVERY:
            self._positions.popleft()  # older than any lag that still matters
        await asyncio.gather(*(self._check(replica, now) for replica in self.replicas))

    async def _check(self, replica: Replica, now: float) -> None:
        try:
            replayed = await asyncio.wait_for(
                position(replica.engine, "pg_last_wal_replay_lsn()"), CHECK_TIMEOUT
            )
        except (SQLAlchemyError, TimeoutError) as error:
            return self.set_state(replica, "down", type(error).__name__)
        if replayed is None:
            return self.set_state(replica, "down", "not a standby: it replays no WAL")
        replica.lag = known_lag(self._positions, replayed, now)
        late = replica.lag > self.max_lag
        self.set_state(replica, "lagging" if late else "up", f"{replica.lag:.1f} s behind")

    async def watch(self) -> None:
        """Check every server about once a second, for as long as the service runs."""
        while True:
            try:
                await self.check()
            except SQLAlchemyError as error:  # the primary is unavailable: keep trying
                logger.warning("replica check: primary unavailable (%s)", type(error).__name__)
            await asyncio.sleep(CHECK_EVERY)


async def position(engine: AsyncEngine, lsn: str) -> int | None:
    """A WAL position (``lsn``, a SQL expression) of ``engine``'s server, in bytes."""
    async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        value = await connection.scalar(text(f"SELECT pg_wal_lsn_diff({lsn}, '0/0')"))
    return None if value is None else int(value)


def read_router(settings: Settings, primary: AsyncEngine) -> ReadRouter | None:
    """The router of DATABASE_READ_URL's replicas, one pool each; None without replicas."""
    if settings.database_read_url is not None and not settings.read_urls:
        logger.warning("DATABASE_READ_URL is ignored: DATABASE_URL is not PostgreSQL")
    limit = settings.database_read_statement_timeout  # then the read goes to the primary
    engines = {u: engine_from_settings(settings, url=u, limit=limit) for u in settings.read_urls}
    replicas = [Replica(f"{u.host}:{u.port or 5432}/{u.database}", e) for u, e in engines.items()]
    return ReadRouter(primary, replicas, settings.database_read_max_lag) if replicas else None


def retry_on_primary(state: ORMExecuteState) -> Result[Any]:
    """A read on its replica, unless it is down; if it cannot serve, it is, and the primary does."""
    router, replica, primary = state.session.info["replica"]
    try:
        if replica.state == "up":
            return state.invoke_statement()
    except SQLAlchemyError as error:  # a connection or pool failure, or a bug
        if unavailable_cause(error) is None:
            raise
        router.set_state(replica, "down", f"a read failed: {type(error).__name__}")
    del state.session.info["replica"]
    state.session.bind = read_bind(primary, get_settings()).sync_engine
    return state.invoke_statement()


@asynccontextmanager
async def watching_replicas(router: ReadRouter | None) -> AsyncIterator[None]:
    """Check the replicas in the background while the block runs (the app's lifespan)."""
    task = asyncio.create_task(router.watch()) if router else None
    try:
        yield
    finally:
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
