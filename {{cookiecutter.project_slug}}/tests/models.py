"""Tables that exist only for the tests of the database layer."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from {{ cookiecutter.package_name }}.core.database import Base, TimestampMixin


class Note(TimestampMixin, Base):
    """A row with a unique column and timestamps."""

    __tablename__ = "test_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100), unique=True)


class Tag(Base):
    """A row that must point at an existing note."""

    __tablename__ = "test_tag"

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("test_note.id"))


class Event(TimestampMixin, Base):
    """A model that declares mapper arguments of its own, as inheritance or versioning do."""

    __tablename__ = "test_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))

    __mapper_args__ = {  # noqa: RUF012 - SQLAlchemy reads it as a plain dict
        "polymorphic_on": "kind",
        "polymorphic_identity": "event",
        "eager_defaults": False,
    }
