"""Reusable columns for models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .base import UTCDateTime


class utcnow(FunctionElement[datetime]):
    """The current UTC time, computed by the database.

    PostgreSQL: statement_timestamp() (timestamptz, microseconds), not CURRENT_TIMESTAMP,
    which is frozen at the start of the transaction: two updates in one transaction would get
    the same time. SQLite's CURRENT_TIMESTAMP has whole seconds only, so an update within the
    same second as the insert would not show; STRFTIME with %f keeps milliseconds.
    https://docs.sqlalchemy.org/en/21/core/compiler.html#utc-timestamp-function
    """

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(STRFTIME('%Y-%m-%d %H:%M:%f', 'now'))"


class TimestampMixin:
    """``created_at`` and ``updated_at``, set by the database, read back as aware UTC.

    ``updated_at`` is refreshed by every ORM or Core UPDATE through the table (``onupdate``
    is applied by SQLAlchemy, not by a database trigger, so raw SQL updates skip it).
    """

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # Fetch the database-generated values with RETURNING after INSERT and UPDATE, so
        # they are loaded without a lazy refresh (MissingGreenlet under asyncio).
        return {"eager_defaults": True}

    created_at: Mapped[datetime] = mapped_column(server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(server_default=utcnow(), onupdate=utcnow())
