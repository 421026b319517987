"""/sessions: users joining and leaving rooms."""

from __future__ import annotations

import httpx

from tests.meetings.api import Json, post


async def test_joining_a_room_opens_a_session(client: httpx.AsyncClient, room: Json) -> None:
    opened = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    assert (opened["user_id"], opened["room_id"], opened["left_at"]) == ("ana", room["id"], None)
    assert (await client.get(f"/sessions/{opened['id']}")).json() == opened


async def test_a_user_cannot_hold_two_open_sessions_in_one_room(
    client: httpx.AsyncClient, room: Json
) -> None:
    first = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    response = await client.post("/sessions", json={"user_id": "ana", "room_id": room["id"]})
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"user 'ana' already has open session {first['id']} in room {room['id']}"
    }


async def test_after_leaving_a_user_can_join_again(client: httpx.AsyncClient, room: Json) -> None:
    first = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    left = await post(client, f"/sessions/{first['id']}/leave", None, expected=200)
    assert left["left_at"] is not None
    assert left["left_at"] >= left["joined_at"]
    second = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    assert second["id"] != first["id"]


async def test_leaving_twice_is_a_409_and_leaving_nothing_a_404(
    client: httpx.AsyncClient, room: Json
) -> None:
    opened = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    await post(client, f"/sessions/{opened['id']}/leave", None, expected=200)
    again = await client.post(f"/sessions/{opened['id']}/leave")
    assert again.status_code == 409
    assert again.json() == {"detail": f"user session {opened['id']} has already ended"}
    assert (await client.post("/sessions/987654/leave")).status_code == 404


async def test_a_full_room_refuses_one_more_user(client: httpx.AsyncClient) -> None:
    room = await post(client, "/rooms", {"name": "Phone booth", "capacity": 1})
    await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    response = await client.post("/sessions", json={"user_id": "bo", "room_id": room["id"]})
    assert response.status_code == 409
    assert response.json() == {"detail": f"room {room['id']} is full (capacity 1)"}


async def test_joining_a_missing_room_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/sessions", json={"user_id": "ana", "room_id": 55555})
    assert response.status_code == 404
    assert response.json() == {"detail": "room 55555 not found"}


async def test_list_sessions_filters_by_room_user_and_openness(
    client: httpx.AsyncClient, room: Json
) -> None:
    other = await post(client, "/rooms", {"name": "Other", "capacity": 4})
    ana = await post(client, "/sessions", {"user_id": "ana", "room_id": room["id"]})
    bo = await post(client, "/sessions", {"user_id": "bo", "room_id": room["id"]})
    elsewhere = await post(client, "/sessions", {"user_id": "ana", "room_id": other["id"]})
    await post(client, f"/sessions/{bo['id']}/leave", None, expected=200)

    async def ids(**params: str | int) -> list[int]:
        response = await client.get("/sessions", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids(room_id=room["id"]) == [ana["id"], bo["id"]]
    assert await ids(user_id="ana") == [ana["id"], elsewhere["id"]]
    assert await ids(room_id=room["id"], open="true") == [ana["id"]]
    assert await ids(room_id=room["id"], open="false") == [bo["id"]]
    page = (await client.get("/sessions", params={"user_id": "ana", "limit": 1})).json()
    assert page["next_offset"] == 1
