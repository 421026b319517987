"""Reusable columns for models."""

from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .base import UTCDateTime

_now = partial(datetime.now, UTC)


class utcnow(FunctionElement[datetime]):
    """The current UTC time, by the database: statement_timestamp() on PostgreSQL (not the
    transaction's start), milliseconds on SQLite (SQLAlchemy's compiler extension)."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow)
def _utcnow(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    sqlite = compiler.dialect.name == "sqlite"
    return "(STRFTIME('%Y-%m-%d %H:%M:%f', 'now'))" if sqlite else "statement_timestamp()"


class TimestampMixin:
    """``created_at`` and ``updated_at``, aware UTC, set by every ORM or Core write (in
    Python: no RETURNING), and by the server for raw SQL and existing rows."""

    created_at: Mapped[datetime] = mapped_column(default=_now, server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        default=_now, server_default=utcnow(), onupdate=_now
    )
