"""The domain's rules that the database itself enforces, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from {{ cookiecutter.package_name }}.meetings.models import (
    Room,
    Summary,
    Transcript,
    TranscriptSegment,
    TranscriptStatus,
    UserSession,
)


@pytest.fixture
async def room(session: AsyncSession) -> Room:
    room = Room(name="Lab", capacity=3)
    session.add(room)
    await session.flush()
    return room


async def add_transcript(session: AsyncSession, room: Room, **values: object) -> Transcript:
    transcript = Transcript(room_id=room.id, title="t", language="en", **values)
    session.add(transcript)
    await session.flush()
    return transcript


async def test_the_database_refuses_a_second_open_session_for_a_user_in_a_room(
    session: AsyncSession, room: Room
) -> None:
    session.add(UserSession(user_id="ana", room_id=room.id))
    await session.flush()
    with pytest.raises(IntegrityError, match=r"uq_user_sessions_open|UNIQUE"):
        async with session.begin_nested():
            session.add(UserSession(user_id="ana", room_id=room.id))
    # A closed session does not count: the same user may have any number of them.
    closed = datetime.now(UTC)
    session.add_all([UserSession(user_id="ana", room_id=room.id, left_at=closed) for _ in range(2)])
    await session.flush()


async def test_the_database_refuses_to_delete_a_room_with_transcripts(
    session: AsyncSession, room: Room
) -> None:
    await add_transcript(session, room)
    with pytest.raises(IntegrityError, match=r"fk_transcripts_room_id_rooms|FOREIGN KEY"):
        async with session.begin_nested():
            await session.execute(delete(Room).where(Room.id == room.id))


async def test_deleting_a_transcript_cascades_to_segments_and_summaries(
    session: AsyncSession, room: Room
) -> None:
    transcript = await add_transcript(session, room)
    session.add_all(
        [
            TranscriptSegment(
                transcript_id=transcript.id, sequence=0, speaker="a", start_ms=0, end_ms=1, text="x"
            ),
            Summary(transcript_id=transcript.id, content="c", model="m"),
        ]
    )
    await session.flush()
    await session.execute(delete(Transcript).where(Transcript.id == transcript.id))
    for table in ("transcript_segments", "summaries"):
        assert await session.scalar(text(f"SELECT count(*) FROM {table}")) == 0


async def test_deleting_a_user_session_keeps_its_transcripts(
    session: AsyncSession, room: Room
) -> None:
    user_session = UserSession(user_id="ana", room_id=room.id)
    session.add(user_session)
    await session.flush()
    transcript = await add_transcript(session, room, session_id=user_session.id)
    await session.execute(delete(UserSession).where(UserSession.id == user_session.id))
    await session.refresh(transcript)
    assert transcript.session_id is None


async def test_segment_times_must_be_ordered(session: AsyncSession, room: Room) -> None:
    transcript = await add_transcript(session, room)
    bad = TranscriptSegment(
        transcript_id=transcript.id, sequence=0, speaker="a", start_ms=10, end_ms=5, text="x"
    )
    session.add(bad)
    with pytest.raises(IntegrityError, match=r"times_ordered|CHECK"):
        await session.flush()


async def test_status_is_stored_as_its_value(session: AsyncSession, room: Room) -> None:
    transcript = await add_transcript(session, room)
    assert transcript.status is TranscriptStatus.RECORDING
    stored = await session.scalar(
        text("SELECT status FROM transcripts WHERE id = :id"), {"id": transcript.id}
    )
    assert stored == "recording"


async def test_relationships_never_load_lazily(session: AsyncSession, room: Room) -> None:
    transcript = await add_transcript(session, room)
    session.add(
        TranscriptSegment(
            transcript_id=transcript.id, sequence=0, speaker="a", start_ms=0, end_ms=1, text="x"
        )
    )
    await session.flush()
    session.expunge_all()
    plain = await session.get_one(Transcript, transcript.id)
    with pytest.raises(InvalidRequestError, match="lazy='raise'"):
        _ = plain.segments
    session.expunge_all()
    loaded = await session.scalar(
        select(Transcript)
        .where(Transcript.id == transcript.id)
        .options(selectinload(Transcript.segments), selectinload(Transcript.room))
    )
    assert loaded is not None
    assert [segment.text for segment in loaded.segments] == ["x"]
    assert loaded.room.name == "Lab"
