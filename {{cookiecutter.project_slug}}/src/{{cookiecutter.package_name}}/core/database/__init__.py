"""The database layer's public API: import from here, not from the modules behind it."""

from .base import NAMING_CONVENTION, Base, UTCDateTime
from .mixins import TimestampMixin, utcnow
from .session import (
    Reader,
    ReaderDep,
    ReadOnlySessionError,
    ReadSessionDep,
    SessionDep,
    create_engine,
    dispose_engine,
    get_engine,
    get_read_engine,
    get_read_session,
    get_read_sessionmaker,
    get_reader,
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
    "Reader",
    "ReaderDep",
    "SessionDep",
    "TimestampMixin",
    "UTCDateTime",
    "create_engine",
    "dispose_engine",
    "get_engine",
    "get_read_engine",
    "get_read_session",
    "get_read_sessionmaker",
    "get_reader",
    "get_session",
    "get_sessionmaker",
    "read_only_sessionmaker",
    "session_scope",
    "utcnow",
]
