"""Many clients at once, on committed transactions: nothing lost, duplicated or oversold."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text

from {{ cookiecutter.package_name }}.core.database import session_scope
from {{ cookiecutter.package_name }}.meetings import service
from {{ cookiecutter.package_name }}.meetings.schemas import (
    RoomCreate,
    SegmentCreate,
)

from tests.meetings.api import Json, post, segment

WRITERS = 8
BATCHES = 5
BATCH_SIZE = 10


async def create_transcript(client: httpx.AsyncClient, capacity: int = 100) -> Json:
    room = await post(client, "/rooms", {"name": "Concurrency", "capacity": capacity})
    body = {"room_id": room["id"], "title": "Load", "language": "en"}
    return await post(client, "/transcripts", body)


async def test_concurrent_appends_lose_and_duplicate_nothing_and_keep_order(
    live_client: httpx.AsyncClient,
) -> None:
    transcript = await create_transcript(live_client)
    url = f"/transcripts/{transcript['id']}/segments"
    total = WRITERS * BATCHES * BATCH_SIZE

    async def writer(number: int) -> list[int]:
        statuses = []
        for batch in range(BATCHES):
            # The writers' sequence numbers interleave: writer w owns w, w + 8, w + 16, ...
            sequences = [
                (batch * BATCH_SIZE + item) * WRITERS + number for item in range(BATCH_SIZE)
            ]
            response = await live_client.post(
                url, json=[segment(n, f"writer {number} says {n}") for n in sequences]
            )
            statuses.append(response.status_code)
        return statuses

    results = await asyncio.gather(*(writer(number) for number in range(WRITERS)))
    assert {status for statuses in results for status in statuses} == {201}
    read = await live_client.get(f"/transcripts/{transcript['id']}", params={"limit": 1000})
    segments = read.json()["segments"]
    assert [s["sequence"] for s in segments] == list(range(total))
    assert all(
        s["text"] == f"writer {s['sequence'] % WRITERS} says {s['sequence']}" for s in segments
    )


async def test_of_concurrent_identical_batches_exactly_one_is_stored(
    live_client: httpx.AsyncClient,
) -> None:
    transcript = await create_transcript(live_client)
    url = f"/transcripts/{transcript['id']}/segments"
    batch = [segment(n) for n in range(20)]
    responses = await asyncio.gather(*(live_client.post(url, json=batch) for _ in range(6)))
    assert sorted(response.status_code for response in responses) == [201] + [409] * 5
    read = await live_client.get(f"/transcripts/{transcript['id']}", params={"limit": 1000})
    assert [s["sequence"] for s in read.json()["segments"]] == list(range(20))


async def test_concurrent_joins_open_one_session_per_user_and_room(
    live_client: httpx.AsyncClient,
) -> None:
    room = await post(live_client, "/rooms", {"name": "Crowded", "capacity": 50})
    body = {"user_id": "ana", "room_id": room["id"]}
    responses = await asyncio.gather(*(live_client.post("/sessions", json=body) for _ in range(10)))
    assert sorted(response.status_code for response in responses) == [201] + [409] * 9
    listed = await live_client.get("/sessions", params={"room_id": room["id"], "open": "true"})
    assert len(listed.json()["items"]) == 1


async def test_concurrent_joins_never_exceed_the_room_capacity(
    live_client: httpx.AsyncClient,
) -> None:
    room = await post(live_client, "/rooms", {"name": "Small", "capacity": 3})
    responses = await asyncio.gather(
        *(
            live_client.post("/sessions", json={"user_id": f"user-{n}", "room_id": room["id"]})
            for n in range(10)
        )
    )
    assert sorted(response.status_code for response in responses) == [201] * 3 + [409] * 7
    listed = await live_client.get("/sessions", params={"room_id": room["id"]})
    assert len(listed.json()["items"]) == 3


async def test_a_transcript_cannot_finish_under_an_append_in_flight(
    live_client: httpx.AsyncClient,
) -> None:
    transcript = await create_transcript(live_client)
    url = f"/transcripts/{transcript['id']}"
    async with session_scope() as appending:
        # An append has checked that the transcript is recording and not yet inserted.
        await service.recording_transcript(appending, transcript["id"])
        finishing = asyncio.create_task(live_client.patch(url, json={"status": "finished"}))
        await asyncio.sleep(0.3)
        # It holds the transcript (FOR SHARE; on SQLite, the write lock) until it commits,
        # so the transcript cannot finish in between.
        assert not finishing.done()
        batch = [SegmentCreate.model_validate(segment(0))]
        await service.append_segments(appending, transcript["id"], batch)
    assert (await finishing).status_code == 200
    read = await live_client.get(url)
    assert [s["sequence"] for s in read.json()["segments"]] == [0]
    late = await live_client.post(f"{url}/segments", json=[segment(1)])
    assert late.status_code == 409


async def test_a_batch_racing_an_uncommitted_identical_one_is_a_409_and_writes_nothing(
    live_client: httpx.AsyncClient,
) -> None:
    transcript = await create_transcript(live_client)
    url = f"/transcripts/{transcript['id']}/segments"
    batch = [segment(n) for n in range(3)]
    async with session_scope() as first:
        await service.append_segments(
            first, transcript["id"], [SegmentCreate.model_validate(s) for s in batch]
        )
        second = asyncio.create_task(live_client.post(url, json=batch))
        await asyncio.sleep(0.3)
    response = await second
    assert response.status_code == 409
    # PostgreSQL: the second INSERT waited on the first's uncommitted keys, then skipped
    # them. SQLite: it waited for the write lock. Either way the primary key decided.
    assert response.json() == {
        "detail": f"sequence numbers already in transcript {transcript['id']}: [0, 1, 2]"
    }
    read = await live_client.get(f"/transcripts/{transcript['id']}")
    assert [s["sequence"] for s in read.json()["segments"]] == [0, 1, 2]


async def test_a_room_name_taken_by_an_uncommitted_create_is_a_409(
    live_client: httpx.AsyncClient,
) -> None:
    async with session_scope() as first:
        await service.create_room(first, RoomCreate(name="Taken", capacity=1))
        second = asyncio.create_task(
            live_client.post("/rooms", json={"name": "Taken", "capacity": 2})
        )
        await asyncio.sleep(0.3)
    response = await second
    assert response.status_code == 409
    assert response.json() == {"detail": "a room named 'Taken' already exists"}
    rooms = (await live_client.get("/rooms")).json()["items"]
    assert [(room["name"], room["capacity"]) for room in rooms] == [("Taken", 1)]


@pytest.mark.postgres_only
async def test_an_append_reads_no_segments_of_a_never_analyzed_table(
    live_client: httpx.AsyncClient,
) -> None:
    # A pre-check "sequence IN (...1000 values)" read every segment of the transcript when
    # the table had no statistics yet (2.1 s a batch at 95,000 segments). The primary key
    # must decide, whatever the statistics: the rows an append reads stay at zero.
    transcript = await create_transcript(live_client)
    existing, size = 20_000, 200
    async with session_scope() as session:
        await session.execute(
            text(
                "INSERT INTO transcript_segments (transcript_id, sequence, speaker, start_ms,"
                " end_ms, text) SELECT :id, n, 'ana', n, n, 'hi' FROM generate_series(0, :last) n"
            ),
            {"id": transcript["id"], "last": existing - 1},
        )
    rows_read = text(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = 'transcript_segments'"
    )
    read_per_append = []
    for batch in range(7):  # past the five custom plans after which a generic one may take over
        first = existing + batch * size
        segments = [SegmentCreate.model_validate(segment(n)) for n in range(first, first + size)]
        async with session_scope() as session:
            before = await session.scalar(rows_read)
            await service.append_segments(session, transcript["id"], segments)
            read_per_append.append(await session.scalar(rows_read) - before)
    assert read_per_append == [0] * 7
