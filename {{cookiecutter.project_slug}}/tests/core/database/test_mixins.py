"""TimestampMixin: database-set timestamps, refreshed on update, aware UTC everywhere."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.core.database import utcnow

from tests.models import Event, Note

# The app's clock and the database's may differ a little (and SQLite keeps milliseconds).
TOLERANCE = timedelta(seconds=5)


async def test_timestamps_are_set_on_insert(session: AsyncSession) -> None:
    before = datetime.now(UTC)
    note = Note(title="new")
    session.add(note)
    await session.flush()
    # Known at flush: no refresh, no lazy load.
    assert note.created_at.tzinfo is UTC
    assert note.updated_at.tzinfo is UTC
    assert abs(note.created_at - before) < TOLERANCE
    assert timedelta(0) <= note.updated_at - note.created_at < timedelta(seconds=1)


async def test_core_inserts_of_many_rows_set_both_timestamps_per_row(
    session: AsyncSession,
) -> None:
    await session.execute(insert(Note).values([{"title": "a"}, {"title": "b"}]))
    await session.execute(insert(Note), [{"title": "c"}, {"title": "d"}])
    rows = (await session.execute(select(Note.created_at, Note.updated_at))).all()
    assert len(rows) == 4
    assert all(
        timedelta(0) <= updated - created < timedelta(seconds=1) and created.tzinfo is UTC
        for created, updated in rows
    )


async def test_updated_at_moves_forward_on_every_orm_update(session: AsyncSession) -> None:
    note = Note(title="v1")
    session.add(note)
    await session.commit()
    created, first_update = note.created_at, note.updated_at
    await asyncio.sleep(0.001)
    note.title = "v2"
    await session.commit()
    assert note.created_at == created
    assert note.updated_at > first_update
    assert note.updated_at.tzinfo is UTC


async def test_updated_at_moves_forward_on_a_core_update(session: AsyncSession) -> None:
    note = Note(title="core")
    session.add(note)
    await session.commit()
    first = note.updated_at
    await asyncio.sleep(0.01)
    await session.execute(update(Note).where(Note.id == note.id).values(title="core2"))
    await session.commit()
    refreshed = await session.scalar(
        select(Note.updated_at).where(Note.id == note.id).execution_options(populate_existing=True)
    )
    assert refreshed is not None
    assert refreshed > first


async def test_timestamps_read_back_as_aware_utc_on_this_backend(
    session: AsyncSession, backend: str
) -> None:
    session.add(Note(title="read back"))
    await session.commit()
    session.expunge_all()
    created, updated = (
        await session.execute(
            select(Note.created_at, Note.updated_at).where(Note.title == "read back")
        )
    ).one()
    assert backend in {"sqlite", "postgresql"}
    assert created.tzinfo is UTC
    assert updated.tzinfo is UTC
    assert abs(created - datetime.now(UTC)) < TOLERANCE


def test_utcnow_renders_a_per_statement_clock_for_each_database() -> None:
    postgresql, sqlite = (URL.create(name).get_dialect()() for name in ("postgresql", "sqlite"))
    assert str(utcnow().compile(dialect=postgresql)) == "statement_timestamp()"
    assert "%f" in str(utcnow().compile(dialect=sqlite))


async def test_rows_written_by_raw_sql_get_the_server_defaults(session: AsyncSession) -> None:
    await session.execute(text(f"INSERT INTO {Note.__tablename__} (title) VALUES ('raw')"))
    created, updated = (
        await session.execute(select(Note.created_at, Note.updated_at).where(Note.title == "raw"))
    ).one()
    assert created.tzinfo is UTC
    assert abs(created - datetime.now(UTC)) < TOLERANCE
    assert abs(updated - created) < timedelta(seconds=1)


async def test_timestamps_stay_readable_whatever_mapper_arguments_a_model_declares(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # A model's own __mapper_args__ replaces a mixin's: nothing the mixin needs may live there.
    async with session_factory() as session:
        event = Event(name="first")
        session.add(event)
        await session.commit()
        created = event.created_at  # read after commit, in the session: no MissingGreenlet
        await asyncio.sleep(0.001)
        event.name = "second"
        await session.commit()
        assert event.updated_at > created
    # The session is closed: the values were loaded, not left expired for a lazy load.
    assert event.created_at == created
    assert event.updated_at > created
