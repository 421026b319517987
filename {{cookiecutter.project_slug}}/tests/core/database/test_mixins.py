"""TimestampMixin: database-set timestamps, refreshed on update, aware UTC everywhere."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import URL
from sqlalchemy.engine.default import StrCompileDialect
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.database import utcnow

from tests.models import Note

# The app's clock and the database's may differ a little (and SQLite keeps milliseconds).
TOLERANCE = timedelta(seconds=5)


async def test_timestamps_are_set_by_the_database_on_insert(session: AsyncSession) -> None:
    before = datetime.now(UTC)
    note = Note(title="new")
    session.add(note)
    await session.flush()
    # Loaded by RETURNING at flush: no refresh, no lazy load.
    assert note.created_at.tzinfo is UTC
    assert note.updated_at.tzinfo is UTC
    assert abs(note.created_at - before) < TOLERANCE
    assert note.updated_at == note.created_at


async def test_updated_at_moves_forward_on_every_orm_update(session: AsyncSession) -> None:
    note = Note(title="v1")
    session.add(note)
    await session.commit()
    created, first_update = note.created_at, note.updated_at
    # PostgreSQL's CURRENT_TIMESTAMP is the transaction's start time and SQLite's clock
    # ticks in milliseconds: wait a little so that a new transaction reads a later time.
    await asyncio.sleep(0.01)
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
    assert str(utcnow().compile(dialect=StrCompileDialect())) == "CURRENT_TIMESTAMP"
