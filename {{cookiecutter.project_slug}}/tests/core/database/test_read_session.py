"""Read-only sessions: autocommit (no BEGIN, no COMMIT), writes refused, connection given back
before the response is sent, readers never wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.database import (
    ReadSessionDep,
    get_engine,
    session_scope,
)
from {{ cookiecutter.package_name }}.core.database.engine import (
    engine_from_settings,
)
from {{ cookiecutter.package_name }}.core.database.session import (
    get_database,
)

from tests.harness import in_transaction, serve, settings_for
from tests.models import Note


async def test_a_read_session_sees_committed_rows_outside_any_transaction(
    committed_database: str,
) -> None:
    async with session_scope() as session:
        session.add(Note(title="committed"))
    async with get_database().reads() as reader:
        assert await reader.scalar(select(Note.title)) == "committed"
        assert not await in_transaction(reader)
    async with session_scope() as writer:
        await writer.scalar(select(Note.title))
        assert await in_transaction(writer)


async def add_and_flush(session: AsyncSession) -> None:
    session.add(Note(title="sneaky"))
    await session.flush()


async def orm_insert(session: AsyncSession) -> None:
    await session.execute(insert(Note).values(title="sneaky"))


async def orm_update(session: AsyncSession) -> None:
    await session.execute(update(Note).values(title="sneaky"))


@pytest.mark.parametrize("write", [add_and_flush, orm_insert, orm_update])
async def test_a_read_session_refuses_to_write(
    committed_database: str, write: Callable[[AsyncSession], Awaitable[None]]
) -> None:
    async with get_database().reads() as reader:
        with pytest.raises(InvalidRequestError, match="read-only; use SessionDep to write"):
            await write(reader)
    async with session_scope() as session:
        assert await session.scalar(select(Note).where(Note.title == "sneaky")) is None


async def test_the_connection_goes_back_to_the_pool_before_the_response_is_sent(
    committed_database: str,
) -> None:
    app = FastAPI()
    pool = get_engine().sync_engine.pool
    seen_while_sending: list[int] = []

    @app.get("/stream")
    async def stream(session: ReadSessionDep) -> StreamingResponse:
        await session.scalar(select(Note.title))

        async def body() -> AsyncIterator[bytes]:
            seen_while_sending.append(pool.checkedout())  # type: ignore[attr-defined]
            yield b"done"

        return StreamingResponse(body())

    async with serve(app) as client:
        response = await client.get("/stream")
    assert response.text == "done"
    assert seen_while_sending == [0]


async def test_steady_load_above_the_pool_size_opens_no_new_connections(
    committed_database: str,
) -> None:
    # SQLAlchemy closes an overflow connection whenever it comes back to a full pool; under
    # steady load above the pool size (pool 5 + overflow 10, 30 clients) that was hundreds of
    # new connections in seconds. The defaults keep every connection they open.
    engine = get_engine()
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda _connection, _record: opened.append(1))

    async def client() -> None:
        for _ in range(5):
            async with get_database().reads() as reader:
                await reader.scalar(select(Note.title))

    await asyncio.gather(*(client() for _ in range(30)))
    assert 0 < len(opened) <= engine.sync_engine.pool.size()  # type: ignore[attr-defined]


async def test_a_reader_does_not_wait_for_a_sqlite_writer(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # PostgreSQL readers never wait for writers (MVCC); on SQLite, read sessions must not
    # take the write lock that every other transaction takes (BEGIN IMMEDIATE).
    url = f"sqlite+aiosqlite:///{tmp_path / 'readers.db'}"
    environ.setenv("DATABASE_URL", url)
    environ.setenv("DATABASE_SQLITE_BUSY_TIMEOUT_MS", "50")
    writer = engine_from_settings(settings_for(url))
    try:
        async with writer.begin() as connection:
            await connection.run_sync(Note.metadata.create_all)
        async with writer.begin() as connection:  # BEGIN IMMEDIATE: holds the write lock
            await connection.execute(text("INSERT INTO test_note (title) VALUES ('pending')"))
            async with get_database().reads() as reader:
                titles = list(await reader.scalars(select(Note.title)))
    finally:
        await writer.dispose()
    assert titles == []  # the read did not block, and saw nothing uncommitted


async def test_behind_pgbouncer_a_read_session_keeps_its_transaction(
    committed_database: str, environ: pytest.MonkeyPatch
) -> None:
    # PgBouncer (transaction mode) may send each statement outside a transaction to another
    # server connection, and asyncpg's prepare and execute are two messages.
    environ.setenv("DATABASE_PGBOUNCER", "true")
    async with get_database().reads() as reader:
        await reader.scalar(select(Note.title))
        assert await in_transaction(reader)


async def test_a_route_that_writes_through_read_session_dep_fails_and_stores_nothing(
    committed_database: str,
) -> None:
    app = FastAPI()

    @app.post("/sneaky")
    async def sneaky(session: ReadSessionDep) -> None:
        session.add(Note(title="sneaky"))
        await session.flush()

    async with serve(app) as client:
        response = await client.post("/sneaky")
    assert response.status_code == 500
    async with session_scope() as session:
        assert await session.scalar(select(Note)) is None
