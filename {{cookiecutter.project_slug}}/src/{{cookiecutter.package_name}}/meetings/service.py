"""The meetings domain's rules, as async functions over a session the caller commits.

Each check that gives a clear message (a missing row, a taken name) runs before the write;
the database's own constraints stay the final word, so a concurrent request that slips
between the check and the write still gets a 409, never a 500 and never a half-written batch.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..core.database import Base, utcnow
from .models import (
    IdempotentRequest,
    Room,
    Summary,
    SummaryKind,
    Transcript,
    TranscriptSegment,
    TranscriptStatus,
    UserSession,
)
from .schemas import (
    RoomCreate,
    RoomUpdate,
    SegmentCreate,
    SummaryCreate,
    TranscriptCreate,
    TranscriptUpdate,
    UserSessionCreate,
)

ModelT = TypeVar("ModelT", bound=Base)


class NotFoundError(LookupError):
    """The row a request names does not exist (HTTP 404)."""


class ConflictError(ValueError):
    """The request contradicts what is stored (HTTP 409); nothing was written."""


LABELS: dict[type[Base], str] = {
    Room: "room",
    UserSession: "user session",
    Transcript: "transcript",
    Summary: "summary",
}


def not_found(model: type[Base], id_: int) -> NotFoundError:
    return NotFoundError(f"{LABELS[model]} {id_} not found")


async def get_or_404(
    db: AsyncSession, model: type[ModelT], id_: int, *, lock: bool = False
) -> ModelT:
    """Load one row by primary key; ``lock`` holds it (FOR UPDATE) until the commit."""
    row = await db.get(model, id_, with_for_update=lock or None)
    if row is None:
        raise not_found(model, id_)
    return row


async def flush_or_conflict(db: AsyncSession, message: str) -> None:
    """Write pending changes; a constraint the database refuses becomes a ConflictError."""
    try:
        await db.flush()
    except IntegrityError as error:
        raise ConflictError(message) from error


async def page(
    db: AsyncSession, statement: Select[ModelT], offset: int, limit: int
) -> tuple[list[ModelT], int | None]:
    """One page of ``statement`` (which must have a stable ORDER BY) and the next offset."""
    rows = list(await db.scalars(statement.offset(offset).limit(limit + 1)))
    return rows[:limit], (offset + limit if len(rows) > limit else None)


def _apply(row: Base, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        setattr(row, name, value)


# --- rooms ----------------------------------------------------------------------------------


async def _name_taken(db: AsyncSession, name: str) -> None:
    if await db.scalar(select(Room.id).where(Room.name == name)) is not None:
        raise ConflictError(f"a room named {name!r} already exists")


async def create_room(db: AsyncSession, data: RoomCreate) -> Room:
    await _name_taken(db, data.name)
    room = Room(**data.model_dump())
    db.add(room)
    await flush_or_conflict(db, f"a room named {data.name!r} already exists")
    return room


async def update_room(db: AsyncSession, room_id: int, data: RoomUpdate) -> Room:
    room = await get_or_404(db, Room, room_id)
    changes = data.changes()
    if "name" in changes and changes["name"] != room.name:
        await _name_taken(db, changes["name"])
    _apply(room, changes)
    await flush_or_conflict(db, f"a room named {room.name!r} already exists")
    return room


async def delete_room(db: AsyncSession, room_id: int) -> None:
    """Delete a room and its closed sessions; refused while it has transcripts or users."""
    room = await get_or_404(db, Room, room_id, lock=True)
    transcripts = await db.scalar(select(func.count()).where(Transcript.room_id == room_id))
    if transcripts:
        raise ConflictError(f"room {room_id} has {transcripts} transcript(s); delete them first")
    if await _open_sessions(db, room_id):
        raise ConflictError(f"room {room_id} has users in it; they must leave first")
    await db.delete(room)
    await flush_or_conflict(db, f"room {room_id} is in use; try again")


def rooms_query() -> Select[Room]:
    return select(Room).order_by(Room.id)


# --- user sessions --------------------------------------------------------------------------


async def _open_sessions(db: AsyncSession, room_id: int) -> int:
    count = await db.scalar(
        select(func.count()).where(UserSession.room_id == room_id, UserSession.left_at.is_(None))
    )
    return count or 0


async def join_room(db: AsyncSession, data: UserSessionCreate) -> UserSession:
    """Open a session for a user in a room that has space and where they are not already."""
    # Locking the room makes concurrent joins to it take turns, so the capacity holds.
    room = await get_or_404(db, Room, data.room_id, lock=True)
    already = await db.scalar(
        select(UserSession.id).where(
            UserSession.room_id == room.id,
            UserSession.user_id == data.user_id,
            UserSession.left_at.is_(None),
        )
    )
    if already is not None:
        raise ConflictError(
            f"user {data.user_id!r} already has open session {already} in room {room.id}"
        )
    if await _open_sessions(db, room.id) >= room.capacity:
        raise ConflictError(f"room {room.id} is full (capacity {room.capacity})")
    user_session = UserSession(user_id=data.user_id, room_id=room.id)
    db.add(user_session)
    await flush_or_conflict(
        db, f"user {data.user_id!r} already has an open session in room {room.id}"
    )
    return user_session


async def leave_room(db: AsyncSession, session_id: int) -> UserSession:
    """Close an open session; closing it twice is a conflict."""
    closed: UserSession | None = await db.scalar(
        update(UserSession)
        .where(UserSession.id == session_id, UserSession.left_at.is_(None))
        .values(left_at=utcnow())
        .returning(UserSession),
        execution_options={"populate_existing": True},
    )
    if closed is None:
        await get_or_404(db, UserSession, session_id)
        raise ConflictError(f"user session {session_id} has already ended")
    return closed


def user_sessions_query(
    room_id: int | None, user_id: str | None, is_open: bool | None
) -> Select[UserSession]:
    statement = select(UserSession).order_by(UserSession.id)
    if room_id is not None:
        statement = statement.where(UserSession.room_id == room_id)
    if user_id is not None:
        statement = statement.where(UserSession.user_id == user_id)
    if is_open is not None:
        ended = UserSession.left_at.is_not(None)
        statement = statement.where(~ended if is_open else ended)
    return statement


# --- transcripts ----------------------------------------------------------------------------


async def create_transcript(db: AsyncSession, data: TranscriptCreate) -> Transcript:
    await get_or_404(db, Room, data.room_id)
    if data.session_id is not None:
        user_session = await get_or_404(db, UserSession, data.session_id)
        if user_session.room_id != data.room_id:
            raise ConflictError(
                f"user session {data.session_id} is in room {user_session.room_id}, "
                f"not in room {data.room_id}"
            )
    transcript = Transcript(**data.model_dump())
    db.add(transcript)
    await flush_or_conflict(db, f"room {data.room_id} was deleted meanwhile")
    return transcript


async def update_transcript(
    db: AsyncSession, transcript_id: int, data: TranscriptUpdate
) -> Transcript:
    transcript = await get_or_404(db, Transcript, transcript_id, lock=True)
    changes = data.changes()
    if (
        transcript.status is TranscriptStatus.FINISHED
        and changes.get("status", TranscriptStatus.FINISHED) is not TranscriptStatus.FINISHED
    ):
        raise ConflictError(f"transcript {transcript_id} is finished and cannot be reopened")
    _apply(transcript, changes)
    await db.flush()
    return transcript


async def delete_transcript(db: AsyncSession, transcript_id: int) -> None:
    """Delete a transcript with its segments and summaries (ON DELETE CASCADE)."""
    deleted = await db.scalar(
        delete(Transcript).where(Transcript.id == transcript_id).returning(Transcript.id)
    )
    if deleted is None:
        raise not_found(Transcript, transcript_id)


def transcripts_query(room_id: int | None, text: str | None) -> Select[Transcript]:
    """Transcripts in id order; ``text`` keeps those whose title or any segment contains it.

    A portable case-insensitive substring match: it reads every segment of the room (no
    index can serve '%text%'). See the README for full-text search at scale.
    """
    statement = select(Transcript).order_by(Transcript.id)
    if room_id is not None:
        statement = statement.where(Transcript.room_id == room_id)
    if text is not None:
        matches: ColumnElement[bool] = Transcript.title.icontains(text, autoescape=True)
        in_segments = exists().where(
            TranscriptSegment.transcript_id == Transcript.id,
            TranscriptSegment.text.icontains(text, autoescape=True),
        )
        statement = statement.where(matches | in_segments)
    return statement


async def recording_transcript(db: AsyncSession, transcript_id: int) -> Transcript:
    """The transcript, held in "recording" until the caller's transaction ends.

    A shared lock (FOR SHARE): appends run side by side, but finishing the transcript waits
    for them, so no segment lands after the transcript is finished. SQLite needs no lock:
    its writers take turns anyway.
    """
    transcript = await db.get(Transcript, transcript_id, with_for_update={"read": True})
    if transcript is None:
        raise not_found(Transcript, transcript_id)
    if transcript.status is not TranscriptStatus.RECORDING:
        raise ConflictError(f"transcript {transcript_id} is finished; no segments can be added")
    return transcript


async def append_segments(
    db: AsyncSession, transcript_id: int, segments: list[SegmentCreate]
) -> int:
    """Append a batch of segments; return the last sequence number.

    The primary key decides which sequence numbers are taken: one INSERT ... ON CONFLICT DO
    NOTHING, whose RETURNING names the rows it stored. If any row was refused, ConflictError
    tells the caller to roll back, which leaves none of the batch. Rows go in in sequence
    order, so concurrent overlapping batches wait for each other instead of deadlocking.
    """
    sequences = sorted(segment.sequence for segment in segments)
    repeated = sorted({a for a, b in pairwise(sequences) if a == b})
    if repeated:
        raise ConflictError(f"sequence numbers repeated within the batch: {repeated}")
    await recording_transcript(db, transcript_id)
    rows = sorted(
        ({"transcript_id": transcript_id, **segment.model_dump()} for segment in segments),
        key=lambda row: row["sequence"],
    )
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(TranscriptSegment)
        .on_conflict_do_nothing()
        .returning(TranscriptSegment.sequence)
    )
    stored = set(await db.scalars(statement, rows))
    taken = [number for number in sequences if number not in stored]
    if taken:
        raise ConflictError(f"sequence numbers already in transcript {transcript_id}: {taken}")
    return sequences[-1]


async def segments_page(
    db: AsyncSession, transcript_id: int, after: int | None, limit: int
) -> tuple[list[TranscriptSegment], int | None]:
    """Up to ``limit`` segments after sequence ``after``, in order, and the next ``after``."""
    statement = (
        select(TranscriptSegment)
        .where(TranscriptSegment.transcript_id == transcript_id)
        .order_by(TranscriptSegment.sequence)
        .limit(limit + 1)
    )
    if after is not None:
        statement = statement.where(TranscriptSegment.sequence > after)
    rows = list(await db.scalars(statement))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].sequence if more else None)


# --- summaries ------------------------------------------------------------------------------


async def create_summary(db: AsyncSession, data: SummaryCreate) -> Summary:
    await get_or_404(db, Transcript, data.transcript_id)
    summary = Summary(**data.model_dump())
    db.add(summary)
    await flush_or_conflict(db, f"transcript {data.transcript_id} was deleted meanwhile")
    return summary


async def latest_summary(db: AsyncSession, transcript_id: int, kind: SummaryKind) -> Summary:
    summary = await db.scalar(
        select(Summary)
        .where(Summary.transcript_id == transcript_id, Summary.kind == kind)
        .order_by(Summary.id.desc())
        .limit(1)
    )
    if summary is None:
        await get_or_404(db, Transcript, transcript_id)
        raise NotFoundError(f"transcript {transcript_id} has no {kind.value} summary yet")
    return summary


def summaries_query(transcript_id: int | None, kind: SummaryKind | None) -> Select[Summary]:
    """Summaries, newest first."""
    statement = select(Summary).order_by(Summary.id.desc())
    if transcript_id is not None:
        statement = statement.where(Summary.transcript_id == transcript_id)
    if kind is not None:
        statement = statement.where(Summary.kind == kind)
    return statement


async def delete_row(db: AsyncSession, model: type[Base], id_: int) -> None:
    row = await get_or_404(db, model, id_)
    await db.delete(row)
    await db.flush()


# --- idempotent creates ---------------------------------------------------------------------


async def stored_answer(db: AsyncSession, key: str, request_hash: str) -> str | None:
    """The answer already given under Idempotency-Key ``key``, if any (ConflictError if the
    key was given to another request)."""
    stored = await db.get(IdempotentRequest, key)
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise ConflictError(f"Idempotency-Key {key!r} was already used for another request")
    return stored.answer


async def store_answer(db: AsyncSession, key: str, request_hash: str, answer: str) -> None:
    """Keep ``answer`` under ``key``, in the transaction of the create that it answers."""
    db.add(IdempotentRequest(key=key, request_hash=request_hash, answer=answer))
    await flush_or_conflict(db, f"a request with Idempotency-Key {key!r} is under way; retry")
