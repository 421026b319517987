"""What the meetings API accepts and returns.

Every bound here matches a column: input that the database would refuse (too long, out of
the integer range, a NUL character) is answered with a 422 before it gets there, never with
a 500. Pydantic itself refuses unpaired surrogates in constrained strings.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from .models import (
    LANGUAGE_LENGTH,
    MODEL_LENGTH,
    NAME_LENGTH,
    USER_ID_LENGTH,
    SummaryKind,
    TranscriptStatus,
)

INT32_MAX = 2**31 - 1
MAX_BATCH = 1000
TEXT_LENGTH = 100_000
# A segment is one utterance: 4,000 characters is minutes of speech. The largest valid batch
# (1,000 of them, up to 4 bytes a character in UTF-8) fits in the default request body limit
# (MAX_REQUEST_BODY_BYTES, 16 MiB).
SEGMENT_TEXT_LENGTH = 4_000


# No NUL character (PostgreSQL cannot store one in text; SQLite would cut there) and at least
# one visible character: not white space, not a control character, not a byte order mark.
# Controls and U+FEFF are named because regex dialects disagree on whether they are \s
# (Python's re, the JSON Schema a client validates with, and pydantic's Rust engine), and
# the schema must mean the same to all of them. A pattern, so that the OpenAPI schema says it.
VISIBLE_TEXT = r"^[^\x00]*[^\s\x00-\x1f\x7f-\x9f\ufeff][^\x00]*$"


def text_of(max_length: int) -> StringConstraints:
    """Non-empty visible text without NUL, at most ``max_length`` characters as sent: the
    length the schema's maxLength gives, white space included."""
    return StringConstraints(min_length=1, max_length=max_length, pattern=VISIBLE_TEXT)


# After the checks, so that they apply to what was sent: stored without surrounding space.
STRIPPED = AfterValidator(str.strip)
Name = Annotated[str, text_of(NAME_LENGTH), STRIPPED]
Title = Annotated[str, text_of(NAME_LENGTH * 2), STRIPPED]
UserId = Annotated[str, text_of(USER_ID_LENGTH), STRIPPED]
ModelName = Annotated[str, text_of(MODEL_LENGTH), STRIPPED]
Body = Annotated[str, text_of(TEXT_LENGTH), STRIPPED]
SegmentText = Annotated[str, text_of(SEGMENT_TEXT_LENGTH), STRIPPED]
SearchText = Annotated[str, text_of(NAME_LENGTH), STRIPPED]
# A BCP 47 language tag such as "en", "pt-BR" or "zh-Hant-TW".
Language = Annotated[
    str,
    StringConstraints(max_length=LANGUAGE_LENGTH, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"),
]


def json_integer(value: object) -> object:
    """Take a JSON number with no fraction (2 or 2.0: both are integers to JSON Schema, and
    so to the OpenAPI schema); refuse true and false, which Python counts as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integers only: true, 1.5 and "1" are refused (strict), not read as 1.
JsonInteger = BeforeValidator(json_integer)
Id = Annotated[int, Field(ge=1, le=INT32_MAX, strict=True), JsonInteger]
Milliseconds = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True), JsonInteger]
SequenceNumber = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True), JsonInteger]
Capacity = Annotated[int, Field(ge=1, le=100_000, strict=True), JsonInteger]


def whole_number(value: object) -> object:
    """Refuse a path or query value that is not plain decimal digits ("1.0", "true", " 1")."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]+", value):
        raise ValueError("must be a whole number, such as 42")
    return value


# For identifiers and counts in paths and queries, which arrive as text.
WholeNumber = BeforeValidator(whole_number)


class Schema(BaseModel):
    """Base of every request and response: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


def without_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Show a Patch field as nullable in the schema only when null is accepted."""
    nullable: frozenset[str] = getattr(model, "nullable", frozenset())
    for name, field in schema.get("properties", {}).items():
        choices = field.get("anyOf", [])
        if name not in nullable and {"type": "null"} in choices:
            choices.remove({"type": "null"})
            if len(choices) == 1:
                field.update(choices.pop())
                del field["anyOf"]
            field.pop("default", None)  # leaving it out is what keeps the value


class Patch(Schema):
    """A partial update: absent fields stay as they are; null is refused unless allowed."""

    model_config = ConfigDict(json_schema_extra=without_null)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        for name in self.model_fields_set - self.nullable:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it unchanged")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, as column values."""
        return self.model_dump(exclude_unset=True)


class Page(Schema):
    """One page of a list in a stable order; ``next_offset`` is null on the last page."""

    next_offset: int | None


class RoomCreate(Schema):
    name: Name
    capacity: Capacity
    description: Body | None = None


class RoomUpdate(Patch):
    nullable: ClassVar[frozenset[str]] = frozenset({"description"})
    name: Name | None = None
    capacity: Capacity | None = None
    description: Body | None = None


class RoomRead(Schema):
    id: int
    name: str
    capacity: int
    description: str | None
    created_at: datetime
    updated_at: datetime


class RoomPage(Page):
    items: list[RoomRead]


class UserSessionCreate(Schema):
    user_id: UserId
    room_id: Id


class UserSessionRead(Schema):
    id: int
    user_id: str
    room_id: int
    joined_at: datetime
    left_at: datetime | None


class UserSessionPage(Page):
    items: list[UserSessionRead]


class TranscriptCreate(Schema):
    room_id: Id
    session_id: Id | None = None
    title: Title
    language: Language


class TranscriptUpdate(Patch):
    title: Title | None = None
    language: Language | None = None
    status: TranscriptStatus | None = None


class TranscriptRead(Schema):
    id: int
    room_id: int
    session_id: int | None
    title: str
    language: str
    status: TranscriptStatus
    created_at: datetime
    updated_at: datetime


class TranscriptPage(Page):
    items: list[TranscriptRead]


class SegmentCreate(Schema):
    sequence: SequenceNumber
    speaker: Name
    start_ms: Milliseconds
    end_ms: Milliseconds = Field(description="not before start_ms (a 422 otherwise)")
    text: SegmentText

    @model_validator(mode="after")
    def _times_ordered(self) -> Self:
        if self.end_ms < self.start_ms:
            raise ValueError("end_ms must not be before start_ms")
        return self


class SegmentRead(Schema):
    sequence: int
    speaker: str
    start_ms: int
    end_ms: int
    text: str


SegmentBatch = Annotated[list[SegmentCreate], Field(min_length=1, max_length=MAX_BATCH)]


class SegmentsAppended(Schema):
    transcript_id: int
    appended: int
    last_sequence: int


class TranscriptWithSegments(TranscriptRead):
    """A transcript and one page of its segments, in sequence order."""

    segments: list[SegmentRead]
    next_after: int | None = Field(
        description="pass as ?after= for the next page; null on the last page"
    )


class SummaryCreate(Schema):
    transcript_id: Id
    kind: SummaryKind = SummaryKind.ABSTRACT
    content: Body
    model: ModelName


class SummaryRead(Schema):
    id: int
    transcript_id: int
    kind: SummaryKind
    content: str
    model: str
    created_at: datetime


class SummaryPage(Page):
    items: list[SummaryRead]
