"""Bad input gets a 4xx that names the problem; no endpoint answers a 500 to it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}.main import app

from tests.meetings.api import Json, segment

TOO_BIG = 10**20


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "", "capacity": 1}, "at least 1 character"),
        ({"name": "   ", "capacity": 1}, "should match pattern"),
        ({"name": "x" * 101, "capacity": 1}, "at most 100 characters"),
        # The schema's maxLength counts what the client sends, white space included.
        ({"name": "\t" * 100 + "x", "capacity": 1}, "at most 100 characters"),
        # Control characters are not visible text, whatever a regex dialect calls white space.
        ({"name": "\x1c\x1f", "capacity": 1}, "should match pattern"),
        ({"name": "\ufeff", "capacity": 1}, "should match pattern"),
        ({"name": "nul\x00byte", "capacity": 1}, "should match pattern"),
        ({"name": "ok", "capacity": 0}, "greater than or equal to 1"),
        ({"name": "ok", "capacity": TOO_BIG}, "less than or equal to 100000"),
        ({"name": "ok", "capacity": "many"}, "valid integer"),
        ({"name": "ok"}, "Field required"),
        ({"name": "ok", "capacity": 1, "colour": "red"}, "Extra inputs are not permitted"),
        (["not", "an", "object"], "valid dictionary"),
    ],
)
async def test_bad_room_bodies_are_422_with_the_reason(
    client: httpx.AsyncClient, body: Any, problem: str
) -> None:
    response = await client.post("/rooms", json=body)
    assert response.status_code == 422
    assert problem in detail(response)


async def test_an_unpaired_surrogate_is_refused_before_the_database(
    client: httpx.AsyncClient,
) -> None:
    raw = b'{"name": "bad \\ud800 text", "capacity": 1}'
    response = await client.post(
        "/rooms", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "valid string" in detail(response)


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/rooms", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON decode error" in detail(response)


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ([], "at least 1 item"),
        ([segment(0)] * 1001, "at most 1000 items"),
        ([{**segment(0), "end_ms": 5, "start_ms": 10}], "end_ms must not be before start_ms"),
        ([{**segment(0), "sequence": -1}], "greater than or equal to 0"),
        ([{**segment(0), "sequence": TOO_BIG}], "less than or equal to 2147483647"),
        ([{**segment(0), "text": "a\x00b"}], "should match pattern"),
        ([{**segment(0), "speaker": ""}], "at least 1 character"),
    ],
)
async def test_bad_segment_batches_are_422_and_write_nothing(
    client: httpx.AsyncClient, transcript: Json, batch: list[Json], problem: str
) -> None:
    response = await client.post(f"/transcripts/{transcript['id']}/segments", json=batch)
    assert response.status_code == 422
    assert problem in detail(response)
    assert (await client.get(f"/transcripts/{transcript['id']}")).json()["segments"] == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"language": "english please"}, "String should match pattern"),
        ({"language": "e"}, "String should match pattern"),
        ({"title": "t" * 201}, "at most 200 characters"),
        ({"status": "paused"}, "'recording' or 'finished'"),
        ({"status": None}, "status cannot be null"),
    ],
)
async def test_bad_transcript_updates_are_422(
    client: httpx.AsyncClient, transcript: Json, change: Json, problem: str
) -> None:
    response = await client.patch(f"/transcripts/{transcript['id']}", json=change)
    assert response.status_code == 422
    assert problem in detail(response)


@pytest.mark.parametrize(
    "url",
    [
        f"/rooms/{TOO_BIG}",
        "/rooms/0",
        "/rooms/-1",
        "/rooms/abc",
        "/rooms?limit=0",
        "/rooms?limit=101",
        "/rooms?offset=-1",
        f"/rooms?offset={TOO_BIG}",
        "/transcripts?q=",
        "/transcripts?q=%00",
        f"/transcripts?room_id={TOO_BIG}",
        "/transcripts/1?after=-1",
        "/summaries?kind=poem",
        "/summaries/latest",
        f"/sessions?user_id={'u' * 65}",
    ],
)
async def test_bad_paths_and_queries_are_422(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", "/transcripts/{id}.0"),
        ("GET", "/transcripts/{id}.0"),
        ("GET", "/rooms/{room}.0"),
        ("GET", "/rooms/true"),
        ("GET", "/rooms/%20{room}"),
        ("GET", "/rooms/+{room}"),
        ("GET", "/rooms/\u0661"),  # ARABIC-INDIC DIGIT ONE: a digit to Python, not to a client
        ("GET", "/transcripts?room_id={room}.0"),
        ("GET", "/transcripts?room_id=true"),
        ("GET", "/rooms?limit=5.0"),
        ("GET", "/transcripts/{id}?after=0.0"),
    ],
)
async def test_identifiers_and_counts_in_paths_and_queries_are_whole_numbers_only(
    client: httpx.AsyncClient, transcript: Json, method: str, url: str
) -> None:
    target = url.format(id=transcript["id"], room=transcript["room_id"])
    response = await client.request(method, target)
    assert response.status_code == 422, response.text
    assert "whole number" in detail(response)
    assert (await client.get(f"/transcripts/{transcript['id']}")).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/rooms", {"name": "bool", "capacity": True}, "not true or false"),
        ("/rooms", {"name": "fraction", "capacity": 2.5}, "valid integer"),
        ("/rooms", {"name": "text", "capacity": "2"}, "valid integer"),
        ("/transcripts", {"room_id": True, "title": "t", "language": "en"}, "not true or false"),
        ("/transcripts", {"room_id": 1.5, "title": "t", "language": "en"}, "valid integer"),
    ],
)
async def test_integer_fields_of_bodies_take_integers_only(
    client: httpx.AsyncClient, path: str, body: Json, problem: str
) -> None:
    await client.post("/rooms", json={"name": "room one", "capacity": 3})
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert problem in detail(response)


async def test_a_number_with_no_fraction_is_an_integer_as_the_schema_says(
    client: httpx.AsyncClient,
) -> None:
    """JSON Schema (so OpenAPI 3.1) counts 3.0 as an integer; a generated client may send it."""
    response = await client.post("/rooms", json={"name": "whole", "capacity": 3.0})
    assert response.status_code == 201, response.text
    assert response.json()["capacity"] == 3
    assert isinstance(response.json()["capacity"], int)


@pytest.mark.parametrize(
    "change", [{"end_ms": False}, {"start_ms": 0.5}, {"sequence": True}, {"sequence": "1"}]
)
async def test_integer_fields_of_segments_take_integers_only(
    client: httpx.AsyncClient, transcript: Json, change: Json
) -> None:
    response = await client.post(
        f"/transcripts/{transcript['id']}/segments", json=[{**segment(0), **change}]
    )
    assert response.status_code == 422, response.text
    assert (await client.get(f"/transcripts/{transcript['id']}")).json()["segments"] == []


def meetings_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the meetings API, path parameters filled with a huge id."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if path in ("/livez", "/readyz"):
            continue
        filled = re.sub(r"\{\w+\}", "2147483647", path)
        found += [(method.upper(), filled) for method in operations]
    return found


@pytest.mark.parametrize("body", [None, {}, [], "text", {"sequence": TOO_BIG}, [None], 12])
async def test_no_endpoint_answers_garbage_with_a_500(client: httpx.AsyncClient, body: Any) -> None:
    routes = meetings_routes()
    assert len(routes) == 20
    for method, path in routes:
        response = await client.request(method, path, json=body)
        assert response.status_code < 500, (method, path, response.text)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/rooms", {"GET", "POST"}),
        ("PUT", "/rooms/1", {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", "/transcripts/1", {"GET", "PATCH", "DELETE"}),
        ("DELETE", "/summaries/latest?transcript_id=1", {"GET"}),
        ("PUT", "/summaries/1", {"GET", "DELETE"}),
    ],
)
async def test_an_unsupported_method_is_a_405_that_lists_every_supported_one(
    client: httpx.AsyncClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405, response.text
    assert set(response.headers["allow"].split(", ")) - {"HEAD"} == allowed


def test_the_schema_shows_null_only_where_a_patch_takes_it() -> None:
    schemas = app.openapi()["components"]["schemas"]
    room = schemas["RoomUpdate"]["properties"]
    assert {"type": "null"} in room["description"]["anyOf"]
    assert room["capacity"]["type"] == "integer"
    assert "anyOf" not in room["capacity"]
    assert "default" not in room["name"]
    status = schemas["TranscriptUpdate"]["properties"]["status"]
    assert "null" not in str(status)


def test_the_schema_says_what_text_is_refused() -> None:
    name = app.openapi()["components"]["schemas"]["RoomCreate"]["properties"]["name"]
    assert not re.fullmatch(name["pattern"], "nul\x00byte")
    assert not re.fullmatch(name["pattern"], "   ")
    assert not re.fullmatch(name["pattern"], "\x1c\x85\ufeff")
    assert re.fullmatch(name["pattern"], " a name ")
