"""The database layer's public API: import from here, not from the modules behind it."""

from .base import NAMING_CONVENTION, Base, UTCDateTime
from .mixins import TimestampMixin, utcnow
from .session import (
    ReadOnlySessionError,
    ReadSessionDep,
    SessionDep,
    create_engine,
    dispose_engine,
    get_engine,
    get_read_session,
    get_read_sessionmaker,
    get_session,
    get_sessionmaker,
    read_only_sessionmaker,
    session_scope,
)

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "ReadOnlySessionError",
    "ReadSessionDep",
    "SessionDep",
    "TimestampMixin",
    "UTCDateTime",
    "create_engine",
    "dispose_engine",
    "get_engine",
    "get_read_session",
    "get_read_sessionmaker",
    "get_session",
    "get_sessionmaker",
    "read_only_sessionmaker",
    "session_scope",
    "utcnow",
]
