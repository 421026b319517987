"""/transcripts: recording, appending segments atomically, reading in order, searching."""

from __future__ import annotations

import json

import httpx
import pytest

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.meetings.schemas import MAX_BATCH, SEGMENT_TEXT_LENGTH

from tests.meetings.api import Json, post, segment


async def test_create_transcript_starts_recording(
    client: httpx.AsyncClient, room: Json, transcript: Json
) -> None:
    assert transcript["status"] == "recording"
    assert (transcript["room_id"], transcript["session_id"]) == (room["id"], None)
    read = (await client.get(f"/transcripts/{transcript['id']}")).json()
    assert read == {**transcript, "segments": [], "next_after": None}


async def test_a_transcript_can_belong_to_a_session_in_its_room(
    client: httpx.AsyncClient, room: Json
) -> None:
    user_session = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    body = {
        "room_id": room["id"],
        "session_id": user_session["id"],
        "title": "t",
        "language": "pt-BR",
    }
    created = await post(client, "/transcripts", body)
    assert created["session_id"] == user_session["id"]
    other = await post(client, "/rooms", {"name": "Other", "capacity": 1})
    response = await client.post("/transcripts", json={**body, "room_id": other["id"]})
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"user session {user_session['id']} is in room {room['id']}, "
        f"not in room {other['id']}"
    }


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"room_id": 777777}, "room 777777 not found"),
        ({"session_id": 888888}, "user session 888888 not found"),
    ],
)
async def test_create_transcript_names_what_is_missing(
    client: httpx.AsyncClient, room: Json, change: Json, detail: str
) -> None:
    body = {"room_id": room["id"], "title": "t", "language": "en", **change}
    response = await client.post("/transcripts", json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


async def test_appended_segments_read_back_in_sequence_order(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    url = f"/transcripts/{transcript['id']}/segments"
    appended = await post(client, url, [segment(2, "two"), segment(0, "zero")])
    assert appended == {"transcript_id": transcript["id"], "appended": 2, "last_sequence": 2}
    await post(client, url, [segment(1, "one")])
    read = (await client.get(f"/transcripts/{transcript['id']}")).json()
    assert [(s["sequence"], s["text"]) for s in read["segments"]] == [
        (0, "zero"),
        (1, "one"),
        (2, "two"),
    ]
    assert read["segments"][0] == segment(0, "zero")


async def test_segments_page_with_after_and_limit(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    await post(client, f"/transcripts/{transcript['id']}/segments", [segment(n) for n in range(7)])
    seen: list[int] = []
    after: int | None = None
    while True:
        params = {"limit": 3} if after is None else {"limit": 3, "after": after}
        page = (await client.get(f"/transcripts/{transcript['id']}", params=params)).json()
        seen += [s["sequence"] for s in page["segments"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == list(range(7))


async def test_a_duplicate_sequence_number_rejects_the_whole_batch(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    url = f"/transcripts/{transcript['id']}/segments"
    await post(client, url, [segment(0), segment(1)])
    response = await client.post(url, json=[segment(2), segment(3), segment(1)])
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"sequence numbers already in transcript {transcript['id']}: [1]"
    }
    read = (await client.get(f"/transcripts/{transcript['id']}")).json()
    assert [s["sequence"] for s in read["segments"]] == [0, 1]


async def test_a_sequence_number_repeated_within_a_batch_is_a_409(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    url = f"/transcripts/{transcript['id']}/segments"
    response = await client.post(url, json=[segment(4), segment(5), segment(4)])
    assert response.status_code == 409
    assert response.json() == {"detail": "sequence numbers repeated within the batch: [4]"}
    assert (await client.get(f"/transcripts/{transcript['id']}")).json()["segments"] == []


async def test_a_finished_transcript_takes_no_segments_and_cannot_reopen(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    url = f"/transcripts/{transcript['id']}"
    finished = await client.patch(url, json={"status": "finished", "title": "Final"})
    assert finished.status_code == 200
    assert (finished.json()["status"], finished.json()["title"]) == ("finished", "Final")
    response = await client.post(f"{url}/segments", json=[segment(0)])
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"transcript {transcript['id']} is finished; no segments can be added"
    }
    reopen = await client.patch(url, json={"status": "recording"})
    assert reopen.status_code == 409
    assert (await client.patch(url, json={"title": "Renamed"})).status_code == 200


@pytest.mark.slow
async def test_the_largest_valid_batch_fits_the_request_body_limit(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    # 1,000 segments of 4,000 characters of 4 bytes each in UTF-8: about 16 MB, under 16 MiB.
    text = "\N{GRINNING FACE}" * SEGMENT_TEXT_LENGTH
    batch = [{**segment(n), "text": text} for n in range(MAX_BATCH)]
    body = json.dumps(batch, ensure_ascii=False).encode()
    assert len(body) <= Settings.model_fields["max_request_body_bytes"].default
    response = await client.post(
        f"/transcripts/{transcript['id']}/segments",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 201, response.text[:200]
    assert response.json()["appended"] == MAX_BATCH
    too_long = [{**segment(MAX_BATCH), "text": text + "x"}]
    refused = await client.post(f"/transcripts/{transcript['id']}/segments", json=too_long)
    assert refused.status_code == 422


async def test_appending_to_a_missing_transcript_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/transcripts/31337/segments", json=[segment(0)])
    assert response.status_code == 404
    assert response.json() == {"detail": "transcript 31337 not found"}


async def test_deleting_a_transcript_deletes_its_segments_and_summaries(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    await post(client, f"/transcripts/{transcript['id']}/segments", [segment(0)])
    summary = await post(
        client, "/summaries", {"transcript_id": transcript["id"], "content": "c", "model": "m"}
    )
    assert (await client.delete(f"/transcripts/{transcript['id']}")).status_code == 204
    assert (await client.get(f"/transcripts/{transcript['id']}")).status_code == 404
    assert (await client.get(f"/summaries/{summary['id']}")).status_code == 404
    assert (await client.delete(f"/transcripts/{transcript['id']}")).status_code == 404


async def test_search_finds_transcripts_by_title_or_segment_text(
    client: httpx.AsyncClient, room: Json
) -> None:
    async def create(title: str, *texts: str) -> int:
        body = {"room_id": room["id"], "title": title, "language": "en"}
        created = await post(client, "/transcripts", body)
        segments = [segment(n, text) for n, text in enumerate(texts)]
        if segments:
            await post(client, f"/transcripts/{created['id']}/segments", segments)
        return int(created["id"])

    budget = await create("Budget review", "numbers")
    roadmap = await create("Roadmap", "the BUDGET is tight", "ok")
    await create("Lunch", "sandwiches")
    odd = await create("100% _done_", "literally")

    async def search(q: str) -> list[int]:
        response = await client.get("/transcripts", params={"room_id": room["id"], "q": q})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await search("budget") == [budget, roadmap]
    assert await search("SANDWICH") != []
    assert await search("nothing like this") == []
    # % and _ are matched literally, not as LIKE wildcards.
    assert await search("0% _") == [odd]
    assert await search("_") == [odd]


async def test_transcripts_list_only_the_rooms_asked_for(
    client: httpx.AsyncClient, room: Json, transcript: Json
) -> None:
    other = await post(client, "/rooms", {"name": "Other", "capacity": 1})
    listed = (await client.get("/transcripts", params={"room_id": other["id"]})).json()
    assert listed == {"items": [], "next_offset": None}
    everything = (await client.get("/transcripts")).json()["items"]
    assert [item["id"] for item in everything] == [transcript["id"]]
