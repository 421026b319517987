"""The Reader: Core reads in autocommit, each on a connection held only while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from {{ cookiecutter.package_name }}.core.database import (
    Reader,
    ReadOnlySessionError,
    get_engine,
    get_read_engine,
    get_reader,
    session_scope,
)

from tests.harness import in_transaction
from tests.models import Note


def spying_reader(engine: AsyncEngine, seen: list[bool]) -> Reader:
    """A Reader on ``engine`` that records, after each read, whether it ran in a transaction."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        async with engine.connect() as connection:
            yield connection
            seen.append(await in_transaction(connection))

    return Reader(connect)


async def test_a_reader_reads_committed_rows_in_autocommit(committed_database: str) -> None:
    async with session_scope() as session:
        session.add_all([Note(title="first"), Note(title="second")])
    seen: list[bool] = []
    reader = spying_reader(get_read_engine(), seen)
    row = await reader.first(select(Note.title).where(Note.title == "first"))
    rows = await reader.all(select(Note.title).order_by(Note.title))
    assert row is not None
    assert row.title == "first"
    assert [row.title for row in rows] == ["first", "second"]
    assert await reader.first(select(Note).where(Note.title == "none")) is None
    assert seen == [False, False, False]  # no BEGIN, no COMMIT
    # The control: the same reads on the service's engine run in a transaction.
    await spying_reader(get_engine(), seen).first(select(Note.title))
    assert seen[-1] is True


async def test_the_reader_gives_its_connection_back_before_returning(
    committed_database: str,
) -> None:
    reader = await get_reader()
    assert reader is await get_reader()  # one per service, as cheap as a dependency can be
    pool = get_engine().sync_engine.pool
    await reader.first(select(Note.title))
    await reader.all(select(Note.title))
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert pool.checkedin() == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "statement",
    [
        insert(Note).values(title="sneaky"),
        update(Note).values(title="sneaky"),
        delete(Note),
    ],
    ids=["insert", "update", "delete"],
)
async def test_a_reader_refuses_to_write(committed_database: str, statement: Executable) -> None:
    async with session_scope() as session:
        session.add(Note(title="kept"))
    reader = await get_reader()
    for read in (reader.first, reader.all):
        with pytest.raises(ReadOnlySessionError, match="read-only; use SessionDep to write"):
            await read(statement)
    async with session_scope() as session:
        assert list(await session.scalars(select(Note.title))) == ["kept"]


async def test_behind_pgbouncer_a_reader_keeps_its_transaction(
    committed_database: str, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_PGBOUNCER", "true")
    seen: list[bool] = []
    await spying_reader(get_read_engine(), seen).first(select(Note.title))
    assert seen == [True]


async def test_steady_load_above_the_pool_size_opens_no_new_connections(
    committed_database: str,
) -> None:
    # SQLAlchemy closes an overflow connection whenever it comes back to a full pool; under
    # steady load above the pool size (pool 5 + overflow 10, 50 clients) that was hundreds of
    # new connections in seconds. The defaults keep every connection they open.
    engine = get_engine()
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda connection, _record: opened.append(1))
    reader = await get_reader()
    statement = select(Note.title)

    async def client() -> None:
        for _ in range(20):
            await reader.first(statement)

    await asyncio.gather(*(client() for _ in range(50)))
    assert 0 < len(opened) <= engine.sync_engine.pool.size()  # type: ignore[attr-defined]
