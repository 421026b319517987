"""The database layer's public API (tests and migrations also use the modules behind it)."""

from .base import Base, UTCDateTime
from .mixins import TimestampMixin, utcnow
from .session import ReadSessionDep, SessionDep, dispose_engine, get_engine, session_scope

__all__ = [
    "Base",
    "ReadSessionDep",
    "SessionDep",
    "TimestampMixin",
    "UTCDateTime",
    "dispose_engine",
    "get_engine",
    "session_scope",
    "utcnow",
]
