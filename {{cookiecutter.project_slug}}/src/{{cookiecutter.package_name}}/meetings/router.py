"""The meetings HTTP API: /rooms, /sessions, /transcripts and /summaries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from ..core.database import ReadSessionDep, SessionDep
from . import service
from .models import IDEMPOTENCY_KEY_LENGTH, Room, Summary, SummaryKind, Transcript, UserSession
from .schemas import (
    INT32_MAX,
    Page,
    RoomCreate,
    RoomPage,
    RoomRead,
    RoomUpdate,
    SearchText,
    SegmentBatch,
    SegmentRead,
    SegmentsAppended,
    SummaryCreate,
    SummaryPage,
    SummaryRead,
    TranscriptCreate,
    TranscriptPage,
    TranscriptRead,
    TranscriptUpdate,
    TranscriptWithSegments,
    UserId,
    UserSessionCreate,
    UserSessionPage,
    UserSessionRead,
    WholeNumber,
)

PathId = Annotated[int, Path(ge=1, le=INT32_MAX), WholeNumber]
QueryId = Annotated[int, Query(ge=1, le=INT32_MAX), WholeNumber]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX), WholeNumber]
Limit = Annotated[int, Query(ge=1, le=100), WholeNumber]
ERRORS: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "Not found"},
    status.HTTP_409_CONFLICT: {"description": "Conflicts with what is stored"},
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_LENGTH,
        pattern=r"^[!-~]+$",  # printable ASCII, no spaces
        description="Makes a retry safe: a request repeated with the same key (after a lost"
        " answer or a 503) gets the first answer again and creates nothing twice. A key is"
        " for one request: another body under it is a 409.",
    ),
]
PageT = TypeVar("PageT", bound=Page)
AnswerT = TypeVar("AnswerT", bound=BaseModel)


async def _page(
    page: type[PageT], db: AsyncSession, statement: Select[Any], offset: int, limit: int
) -> PageT:
    """One page of ``statement`` as the ``page`` schema."""
    items, next_offset = await service.page(db, statement, offset, limit)
    return page.model_validate({"items": items, "next_offset": next_offset})


async def once(
    request: Request,
    db: AsyncSession,
    key: str | None,
    create: Callable[[], Awaitable[AnswerT]],
    answer: type[AnswerT],
) -> AnswerT:
    """Run ``create`` once per Idempotency-Key: a retry with the key gets the stored answer."""
    if key is None:
        return await create()
    body = json.dumps(await request.json(), sort_keys=True)
    fingerprint = f"{request.method} {request.url.path} {body}".encode()
    request_hash = hashlib.sha256(fingerprint).hexdigest()
    stored = await service.stored_answer(db, key, request_hash)
    if stored is not None:
        return answer.model_validate_json(stored)
    created = await create()
    await service.store_answer(db, key, request_hash, created.model_dump_json())
    return created


rooms = APIRouter(prefix="/rooms", tags=["rooms"], responses=ERRORS)
sessions = APIRouter(prefix="/sessions", tags=["sessions"], responses=ERRORS)
transcripts = APIRouter(prefix="/transcripts", tags=["transcripts"], responses=ERRORS)
summaries = APIRouter(prefix="/summaries", tags=["summaries"], responses=ERRORS)


@rooms.post("", status_code=status.HTTP_201_CREATED)
async def create_room(
    request: Request, data: RoomCreate, db: SessionDep, key: IdempotencyKey = None
) -> RoomRead:
    async def create() -> RoomRead:
        return RoomRead.model_validate(await service.create_room(db, data))

    return await once(request, db, key, create, RoomRead)


@rooms.get("")
async def list_rooms(db: ReadSessionDep, offset: Offset = 0, limit: Limit = 50) -> RoomPage:
    return await _page(RoomPage, db, service.rooms_query(), offset, limit)


@rooms.get("/{room_id}")
async def read_room(room_id: PathId, db: ReadSessionDep) -> RoomRead:
    return RoomRead.model_validate(await service.get_or_404(db, Room, room_id))


@rooms.patch("/{room_id}")
async def update_room(room_id: PathId, data: RoomUpdate, db: SessionDep) -> RoomRead:
    return RoomRead.model_validate(await service.update_room(db, room_id, data))


@rooms.delete("/{room_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_room(room_id: PathId, db: SessionDep) -> None:
    await service.delete_room(db, room_id)


@sessions.post("", status_code=status.HTTP_201_CREATED)
async def join_room(
    request: Request, data: UserSessionCreate, db: SessionDep, key: IdempotencyKey = None
) -> UserSessionRead:
    """A user joins a room: one open session per user and room, up to the room's capacity."""

    async def create() -> UserSessionRead:
        return UserSessionRead.model_validate(await service.join_room(db, data))

    return await once(request, db, key, create, UserSessionRead)


@sessions.get("")
async def list_sessions(
    db: ReadSessionDep,
    room_id: QueryId | None = None,
    user_id: UserId | None = None,
    is_open: Annotated[bool | None, Query(alias="open")] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> UserSessionPage:
    statement = service.user_sessions_query(room_id, user_id, is_open)
    return await _page(UserSessionPage, db, statement, offset, limit)


@sessions.get("/{session_id}")
async def read_user_session(session_id: PathId, db: ReadSessionDep) -> UserSessionRead:
    return UserSessionRead.model_validate(await service.get_or_404(db, UserSession, session_id))


@sessions.post("/{session_id}/leave")
async def leave_room(session_id: PathId, db: SessionDep) -> UserSessionRead:
    return UserSessionRead.model_validate(await service.leave_room(db, session_id))


@transcripts.post("", status_code=status.HTTP_201_CREATED)
async def create_transcript(
    request: Request, data: TranscriptCreate, db: SessionDep, key: IdempotencyKey = None
) -> TranscriptRead:
    async def create() -> TranscriptRead:
        return TranscriptRead.model_validate(await service.create_transcript(db, data))

    return await once(request, db, key, create, TranscriptRead)


@transcripts.get("")
async def list_transcripts(
    db: ReadSessionDep,
    room_id: QueryId | None = None,
    q: Annotated[
        SearchText | None, Query(description="text the title or a segment contains")
    ] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> TranscriptPage:
    statement = service.transcripts_query(room_id, q)
    return await _page(TranscriptPage, db, statement, offset, limit)


@transcripts.get("/{transcript_id}")
async def read_transcript(
    transcript_id: PathId,
    db: ReadSessionDep,
    after: Offset | None = None,
    limit: Annotated[int, Query(ge=1, le=1000), WholeNumber] = 200,
) -> TranscriptWithSegments:
    """The transcript and its segments after sequence ``after``, in order."""
    transcript = await service.get_or_404(db, Transcript, transcript_id)
    segments, next_after = await service.segments_page(db, transcript_id, after, limit)
    return TranscriptWithSegments.model_validate(
        {
            **TranscriptRead.model_validate(transcript).model_dump(),
            "segments": [SegmentRead.model_validate(segment) for segment in segments],
            "next_after": next_after,
        }
    )


@transcripts.patch("/{transcript_id}")
async def update_transcript(
    transcript_id: PathId, data: TranscriptUpdate, db: SessionDep
) -> TranscriptRead:
    """Rename, relabel or finish a transcript (a finished one cannot be reopened)."""
    return TranscriptRead.model_validate(await service.update_transcript(db, transcript_id, data))


@transcripts.delete("/{transcript_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_transcript(transcript_id: PathId, db: SessionDep) -> None:
    """Delete the transcript with its segments and summaries."""
    await service.delete_transcript(db, transcript_id)


@transcripts.post("/{transcript_id}/segments", status_code=status.HTTP_201_CREATED)
async def append_segments(
    request: Request,
    transcript_id: PathId,
    segments: SegmentBatch,
    db: SessionDep,
    key: IdempotencyKey = None,
) -> SegmentsAppended:
    """Append a batch atomically: one taken sequence number rejects all of it (409)."""

    async def create() -> SegmentsAppended:
        last = await service.append_segments(db, transcript_id, segments)
        return SegmentsAppended(
            transcript_id=transcript_id, appended=len(segments), last_sequence=last
        )

    return await once(request, db, key, create, SegmentsAppended)


@summaries.post("", status_code=status.HTTP_201_CREATED)
async def create_summary(
    request: Request, data: SummaryCreate, db: SessionDep, key: IdempotencyKey = None
) -> SummaryRead:
    async def create() -> SummaryRead:
        return SummaryRead.model_validate(await service.create_summary(db, data))

    return await once(request, db, key, create, SummaryRead)


@summaries.get("")
async def list_summaries(
    db: ReadSessionDep,
    transcript_id: QueryId | None = None,
    kind: SummaryKind | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> SummaryPage:
    """Summaries, newest first."""
    statement = service.summaries_query(transcript_id, kind)
    return await _page(SummaryPage, db, statement, offset, limit)


# Declared before /{summary_id}, which would otherwise take "latest" for an id.
@summaries.get("/latest")
async def latest_summary(
    transcript_id: QueryId,
    db: ReadSessionDep,
    kind: SummaryKind = SummaryKind.ABSTRACT,
) -> SummaryRead:
    """The newest summary of a transcript (of one kind, "abstract" by default)."""
    return SummaryRead.model_validate(await service.latest_summary(db, transcript_id, kind))


# ":int" keeps "latest" out of the id: DELETE /summaries/latest is a 405, not a bad id.
@summaries.get("/{summary_id:int}")
async def read_summary(summary_id: PathId, db: ReadSessionDep) -> SummaryRead:
    return SummaryRead.model_validate(await service.get_or_404(db, Summary, summary_id))


@summaries.delete("/{summary_id:int}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_summary(summary_id: PathId, db: SessionDep) -> None:
    await service.delete_row(db, Summary, summary_id)


async def _not_found(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=status.HTTP_404_NOT_FOUND)


async def _conflict(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=status.HTTP_409_CONFLICT)


def add_meetings_api(app: FastAPI) -> None:
    """Mount the meetings routers on ``app`` and answer the domain's errors as 404/409."""
    for router in (rooms, sessions, transcripts, summaries):
        app.include_router(router)
    app.add_exception_handler(service.NotFoundError, _not_found)
    app.add_exception_handler(service.ConflictError, _conflict)
