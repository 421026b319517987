"""The meetings domain's tables: rooms, user sessions, transcripts, segments and summaries.

Deletion rules, enforced by the database (foreign keys) and mirrored by the ORM:
- a room with transcripts or open sessions cannot be deleted (RESTRICT); its closed sessions
  go with it (CASCADE);
- a transcript takes its segments and summaries with it (CASCADE);
- a transcript outlives the user session it was recorded in (SET NULL).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Enum,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..core.database import Base, TimestampMixin, utcnow

NAME_LENGTH = 100
USER_ID_LENGTH = 64
LANGUAGE_LENGTH = 35  # the longest BCP 47 tag in common use fits
MODEL_LENGTH = 100
IDEMPOTENCY_KEY_LENGTH = 255
# Last in the __table_args__ of a table with an integer id: a deleted row's id is never given
# to another row, on SQLite as on PostgreSQL (whose identities never reuse one). Without
# AUTOINCREMENT, SQLite gives the highest id again once its row is deleted, and a stored
# Idempotency-Key answer or a client's link would come to name another row.
IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


class TranscriptStatus(enum.StrEnum):
    """Where a transcript is in its life: segments may be appended while it is recording."""

    RECORDING = "recording"
    FINISHED = "finished"


class SummaryKind(enum.StrEnum):
    """What a summary condenses a transcript into."""

    ABSTRACT = "abstract"
    ACTION_ITEMS = "action_items"
    DECISIONS = "decisions"


class Room(TimestampMixin, Base):
    """A meeting room."""

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    capacity: Mapped[int]
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (CheckConstraint("capacity > 0", name="capacity_positive"), IDS_NEVER_REUSED)


class UserSession(TimestampMixin, Base):
    """A user's presence in a room, from joining until leaving."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    joined_at: Mapped[datetime] = mapped_column(server_default=utcnow())
    left_at: Mapped[datetime | None]

    room: Mapped[Room] = relationship(lazy="raise")

    __table_args__ = (
        # One open session per user and room, enforced by a partial unique index (both
        # SQLite and PostgreSQL have them), so concurrent joins cannot both succeed.
        Index(
            "uq_user_sessions_open",
            "user_id",
            "room_id",
            unique=True,
            sqlite_where=text("left_at IS NULL"),
            postgresql_where=text("left_at IS NULL"),
        ),
        Index("ix_user_sessions_room_id_left_at", "room_id", "left_at"),
        IDS_NEVER_REUSED,
    )


class Transcript(TimestampMixin, Base):
    """What was said in a room, as ordered segments appended while the meeting runs."""

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="RESTRICT"), index=True)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_sessions.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(NAME_LENGTH * 2))
    language: Mapped[str] = mapped_column(String(LANGUAGE_LENGTH))
    status: Mapped[TranscriptStatus] = mapped_column(
        # A native ENUM type on PostgreSQL, a CHECK constraint on SQLite.
        Enum(
            TranscriptStatus,
            name="transcript_status",
            values_callable=lambda members: [member.value for member in members],
            create_constraint=True,
        ),
        default=TranscriptStatus.RECORDING,
    )

    room: Mapped[Room] = relationship(lazy="raise")
    segments: Mapped[list[TranscriptSegment]] = relationship(
        lazy="raise",
        order_by="TranscriptSegment.sequence",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    summaries: Mapped[list[Summary]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    __table_args__ = IDS_NEVER_REUSED


class TranscriptSegment(TimestampMixin, Base):
    """One utterance of a transcript; its sequence number orders it and is unique in it."""

    __tablename__ = "transcript_segments"

    # The primary key is the natural one: it makes the sequence unique per transcript and
    # reading a transcript in order an index range scan.
    transcript_id: Mapped[int] = mapped_column(
        ForeignKey("transcripts.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    speaker: Mapped[str] = mapped_column(String(NAME_LENGTH))
    start_ms: Mapped[int]
    end_ms: Mapped[int]
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("sequence >= 0", name="sequence_not_negative"),
        CheckConstraint("start_ms >= 0 AND end_ms >= start_ms", name="times_ordered"),
    )


class Summary(TimestampMixin, Base):
    """A summary of a transcript; a transcript may be summarised again and again."""

    __tablename__ = "summaries"

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"))
    # Text: the CHECK constraint below bounds it, and a new kind then changes only that.
    kind: Mapped[str] = mapped_column(Text, server_default=SummaryKind.ABSTRACT.value)
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(MODEL_LENGTH))

    __table_args__ = (
        # The latest summary of a kind is the highest id: one index probe, no sort.
        Index("ix_summaries_transcript_id_kind_id", "transcript_id", "kind", "id"),
        CheckConstraint(
            "kind IN ({})".format(", ".join(f"'{kind.value}'" for kind in SummaryKind)),
            name="kind_known",
        ),
        IDS_NEVER_REUSED,
    )


class IdempotentRequest(TimestampMixin, Base):
    """A create answered under an Idempotency-Key, stored in the create's own transaction:
    a retry with the key gets the same answer and creates nothing again, whether the first
    answer was lost on its way back or the connection was lost during COMMIT."""

    __tablename__ = "idempotent_requests"

    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), primary_key=True)
    # SHA-256 of the method, the path and the body: a key is for one request only.
    request_hash: Mapped[str] = mapped_column(String(64))
    answer: Mapped[str] = mapped_column(Text)  # the JSON body answered (201)
