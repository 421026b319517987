"""/rooms: create, read, list, update and delete, with the deletion rules."""

from __future__ import annotations

import httpx

from tests.meetings.api import Json, post


async def test_create_room_returns_it_with_timestamps(client: httpx.AsyncClient) -> None:
    room = await post(client, "/rooms", {"name": "  Atlas ", "capacity": 8, "description": "3F"})
    assert room["id"] >= 1
    assert (room["name"], room["capacity"], room["description"]) == ("Atlas", 8, "3F")
    assert room["created_at"] <= room["updated_at"]
    assert (await client.get(f"/rooms/{room['id']}")).json() == room


async def test_a_deleted_rooms_id_is_never_given_to_another(client: httpx.AsyncClient) -> None:
    deleted = await post(client, "/rooms", {"name": "Gone", "capacity": 1})
    assert (await client.delete(f"/rooms/{deleted['id']}")).status_code == 204
    created = await post(client, "/rooms", {"name": "New", "capacity": 1})
    assert created["id"] > deleted["id"]
    assert (await client.get(f"/rooms/{deleted['id']}")).status_code == 404


async def test_room_names_are_unique(client: httpx.AsyncClient, room: Json) -> None:
    response = await client.post("/rooms", json={"name": room["name"], "capacity": 2})
    assert response.status_code == 409
    assert response.json() == {"detail": "a room named 'Board room' already exists"}


async def test_reading_a_missing_room_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/rooms/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "room 999999 not found"}


async def test_list_rooms_pages_in_creation_order(client: httpx.AsyncClient) -> None:
    ids = [(await post(client, "/rooms", {"name": f"r{n}", "capacity": 1}))["id"] for n in range(5)]
    first = (await client.get("/rooms", params={"limit": 2})).json()
    second = (await client.get("/rooms", params={"offset": 2, "limit": 2})).json()
    last = (await client.get("/rooms", params={"offset": 4, "limit": 2})).json()
    pages = [first, second, last]
    assert [room["id"] for page in pages for room in page["items"]] == ids
    assert [page["next_offset"] for page in pages] == [2, 4, None]


async def test_update_room_changes_only_the_fields_sent(
    client: httpx.AsyncClient, room: Json
) -> None:
    response = await client.patch(f"/rooms/{room['id']}", json={"capacity": 10})
    assert response.status_code == 200
    updated = response.json()
    assert (updated["name"], updated["capacity"]) == (room["name"], 10)
    assert updated["updated_at"] > room["updated_at"]
    cleared = await client.patch(f"/rooms/{room['id']}", json={"description": None})
    assert cleared.json()["description"] is None


async def test_update_room_refuses_null_for_a_required_field(
    client: httpx.AsyncClient, room: Json
) -> None:
    response = await client.patch(f"/rooms/{room['id']}", json={"name": None})
    assert response.status_code == 422
    assert "name cannot be null" in response.text


async def test_renaming_a_room_to_a_taken_name_is_a_409(
    client: httpx.AsyncClient, room: Json
) -> None:
    other = await post(client, "/rooms", {"name": "Other", "capacity": 1})
    response = await client.patch(f"/rooms/{other['id']}", json={"name": room["name"]})
    assert response.status_code == 409
    same = await client.patch(f"/rooms/{room['id']}", json={"name": room["name"]})
    assert same.status_code == 200


async def test_deleting_an_empty_room_removes_it_and_its_closed_sessions(
    client: httpx.AsyncClient, room: Json
) -> None:
    user_session = await post(client, "/sessions", {"user_id": "u1", "room_id": room["id"]})
    await post(client, f"/sessions/{user_session['id']}/leave", None, expected=200)
    response = await client.delete(f"/rooms/{room['id']}")
    assert response.status_code == 204
    assert (await client.get(f"/rooms/{room['id']}")).status_code == 404
    assert (await client.get(f"/sessions/{user_session['id']}")).status_code == 404


async def test_a_room_with_users_in_it_cannot_be_deleted(
    client: httpx.AsyncClient, room: Json
) -> None:
    await post(client, "/sessions", {"user_id": "u1", "room_id": room["id"]})
    response = await client.delete(f"/rooms/{room['id']}")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"room {room['id']} has users in it; they must leave first"
    }


async def test_a_room_with_transcripts_cannot_be_deleted(
    client: httpx.AsyncClient, room: Json, transcript: Json
) -> None:
    response = await client.delete(f"/rooms/{room['id']}")
    assert response.status_code == 409
    assert "has 1 transcript(s); delete them first" in response.json()["detail"]
    assert (await client.get(f"/transcripts/{transcript['id']}")).status_code == 200
    await client.delete(f"/transcripts/{transcript['id']}")
    assert (await client.delete(f"/rooms/{room['id']}")).status_code == 204


async def test_deleting_a_missing_room_is_a_404(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/rooms/424242")).status_code == 404
