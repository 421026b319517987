"""The generated service plus benchmark-only routes; run.py serves it with uvicorn.

BENCH_PACKAGE names the baked package. The extra routes:
- /bench/ping: no database (the ceiling);
- /bench/common/rooms/{id}: the pattern most services start from, for contrast: SQLAlchemy's
  pool_pre_ping, SQLAlchemy's default pool (5 + 10 overflow) and a committed transaction
  around every request;
- /bench/pool-order/rooms/{id}: GET /rooms/{id} without the turns for a pooled connection
  (core/database/engine.py ``turn``): SQLAlchemy's pool alone decides who gets a connection;
- /bench/sleep?seconds=: waits on the database (pg_sleep, or a SQLite function that sleeps);
- /bench/blocking?seconds=: the same wait through a blocking driver (sqlite3) inside
  ``async def``, which is what the template protects against.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

package = os.environ["BENCH_PACKAGE"]
main = importlib.import_module(f"{package}.main")
database = importlib.import_module(f"{package}.core.database")
session_module = importlib.import_module(f"{package}.core.database.session")
settings = importlib.import_module(f"{package}.core.config").get_settings()
models = importlib.import_module(f"{package}.meetings.models")
schemas = importlib.import_module(f"{package}.meetings.schemas")

app = main.app
sqlite = settings.sqlalchemy_url.get_backend_name() == "sqlite"


def _sleep_function(dbapi_connection: Any, _record: Any) -> None:
    # aiosqlite runs each connection in a thread: this sleeps there, like a slow query.
    dbapi_connection.create_function("bench_sleep", 1, lambda s: time.sleep(s) or 1)


if sqlite:
    event.listen(database.get_engine().sync_engine, "connect", _sleep_function)

common_engine = create_async_engine(
    settings.sqlalchemy_url, pool_pre_ping=True, pool_size=5, max_overflow=10
)
common_sessions = async_sessionmaker(common_engine, expire_on_commit=False)


async def common_session() -> AsyncIterator[AsyncSession]:
    async with common_sessions() as session, session.begin():
        yield session


@app.get("/bench/ping")
async def bench_ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/bench/common/rooms/{room_id}")
async def common_read_room(
    room_id: int, session: Annotated[AsyncSession, Depends(common_session)]
) -> Any:
    return schemas.RoomRead.model_validate(await session.get(models.Room, room_id))


async def pool_order_session() -> AsyncIterator[AsyncSession]:
    async with session_module.get_database().reads() as session:  # ReadSessionDep's, no turn
        yield session


@app.get("/bench/pool-order/rooms/{room_id}")
async def pool_order_read_room(
    room_id: int,
    session: Annotated[AsyncSession, Depends(pool_order_session, scope="function")],
) -> Any:
    return schemas.RoomRead.model_validate(await session.get(models.Room, room_id))


@app.get("/bench/sleep")
async def bench_sleep(session: database.ReadSessionDep, seconds: float = 0.2) -> dict[str, str]:
    query = "SELECT bench_sleep(:s)" if sqlite else "SELECT pg_sleep(:s)"
    await session.execute(text(query), {"s": seconds})
    return {"status": "ok"}


@app.get("/bench/blocking")
async def bench_blocking(seconds: float = 0.2) -> dict[str, str]:
    connection = sqlite3.connect(":memory:")
    connection.create_function("bench_sleep", 1, lambda s: time.sleep(s) or 1)
    connection.execute("SELECT bench_sleep(?)", (seconds,)).fetchone()  # blocks the loop
    connection.close()
    return {"status": "ok"}
