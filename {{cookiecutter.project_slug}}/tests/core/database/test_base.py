"""The declarative base: naming convention and the UTC datetime type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, UniqueConstraint, select
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from {{ cookiecutter.package_name }}.core.database import Base, UTCDateTime
from {{ cookiecutter.package_name }}.core.database.base import NAMING_CONVENTION

from tests.models import Note, Tag


def dialect(name: str) -> Dialect:
    return URL.create(name).get_dialect()()


SQLITE, POSTGRESQL = dialect("sqlite"), dialect("postgresql")


def test_metadata_names_every_kind_of_constraint() -> None:
    assert set(Base.metadata.naming_convention) >= {"ix", "uq", "ck", "fk", "pk"}
    assert Base.metadata.naming_convention == {**NAMING_CONVENTION}


def test_constraints_get_predictable_names() -> None:
    tables = Base.metadata.tables
    note_constraints = {c.name for c in tables[Note.__tablename__].constraints}
    tag_constraints = {c.name for c in tables[Tag.__tablename__].constraints}
    assert {"pk_test_note", "uq_test_note_title"} <= note_constraints
    assert "fk_test_tag_note_id_test_note" in tag_constraints


def test_multi_column_unique_constraints_name_every_column() -> None:
    table = Table(
        "pair",
        MetaData(naming_convention=NAMING_CONVENTION),
        Column("a", Integer),
        Column("b", Integer),
        UniqueConstraint("a", "b"),
    )
    names = {c.name for c in table.constraints if isinstance(c, UniqueConstraint)}
    assert names == {"uq_pair_a_b"}


def test_datetime_annotations_map_to_the_utc_type() -> None:
    assert isinstance(Note.__table__.c.created_at.type, UTCDateTime)


@pytest.mark.parametrize("target", [SQLITE, POSTGRESQL], ids=["sqlite", "postgresql"])
def test_utc_type_converts_aware_values_to_utc(target: Dialect) -> None:
    value = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = UTCDateTime().process_bind_param(value, target)
    assert stored is not None
    assert stored.replace(tzinfo=UTC) == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)


def test_utc_type_stores_naive_utc_on_sqlite() -> None:
    value = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert UTCDateTime().process_bind_param(value, SQLITE) == datetime(2030, 1, 1, 12, 0)


def test_utc_type_refuses_naive_values() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UTCDateTime().process_bind_param(datetime(2030, 1, 1), SQLITE)


def test_utc_type_reads_naive_values_as_utc_and_aware_ones_converted() -> None:
    read = UTCDateTime().process_result_value
    assert read(datetime(2030, 1, 1, 12), SQLITE) == datetime(2030, 1, 1, 12, tzinfo=UTC)
    aware = datetime(2030, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    converted = read(aware, POSTGRESQL)
    assert converted is not None
    assert converted.utcoffset() == timedelta(0)
    assert converted == aware
    assert read(None, SQLITE) is None


async def test_an_offset_datetime_round_trips_as_the_same_instant_in_utc(
    session: AsyncSession,
) -> None:
    moment = datetime(2030, 6, 1, 12, 30, 15, 250000, tzinfo=timezone(timedelta(hours=-5)))
    note = Note(title="tz")
    session.add(note)
    await session.flush()
    note.created_at = moment
    await session.commit()
    session.expunge_all()
    stored = await session.scalar(select(Note.created_at).where(Note.title == "tz"))
    assert stored == moment
    assert stored is not None
    assert stored.tzinfo is UTC


async def test_writing_a_naive_datetime_fails_without_storing_anything(
    session: AsyncSession,
) -> None:
    session.add(Note(title="naive", created_at=datetime(2030, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime"):
        await session.flush()


@pytest.mark.parametrize("name", ["sqlite", "postgresql"])
def test_a_missing_timestamp_stays_missing_both_ways(name: str) -> None:
    column_type = UTCDateTime()
    assert column_type.process_bind_param(None, dialect(name)) is None
    assert column_type.process_result_value(None, dialect(name)) is None
