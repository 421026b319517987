"""Reusable columns for models."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .base import UTCDateTime


class utcnow(FunctionElement[datetime]):
    """The current UTC time, by the database: statement_timestamp() on PostgreSQL (not the
    transaction's start), milliseconds on SQLite.
    https://docs.sqlalchemy.org/en/21/core/compiler.html#utc-timestamp-function"""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(STRFTIME('%Y-%m-%d %H:%M:%f', 'now'))"


_now = partial(datetime.now, UTC)


class TimestampMixin:
    """``created_at`` and ``updated_at``, aware UTC, set by every ORM or Core write (in
    Python: no RETURNING), and by the server for raw SQL and existing rows."""

    created_at: Mapped[datetime] = mapped_column(default=_now, server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        default=_now, server_default=utcnow(), onupdate=_now
    )
