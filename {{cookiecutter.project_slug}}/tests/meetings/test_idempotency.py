"""Creates that can be retried safely: the Idempotency-Key header, and an honest answer when
the connection is lost during a write (it may have been stored)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection

from {{ cookiecutter.package_name }}.core.database import get_engine, session_scope
from {{ cookiecutter.package_name }}.meetings.models import Room

from tests.meetings.api import Json, post, segment


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def rooms_named(name: str) -> int:
    async with session_scope() as db:
        return int(await db.scalar(select(func.count()).where(Room.name == name)) or 0)


async def test_a_create_retried_with_its_key_answers_the_same_and_creates_nothing_more(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "Retried", "capacity": 3}
    first = await client.post("/rooms", json=body, headers=keyed("create-room-1"))
    again = await client.post("/rooms", json=body, headers=keyed("create-room-1"))
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    rooms = (await client.get("/rooms")).json()["items"]
    assert [room["name"] for room in rooms] == ["Retried"]


async def test_a_batch_retried_with_its_key_is_not_a_conflict(
    client: httpx.AsyncClient, transcript: Json
) -> None:
    url = f"/transcripts/{transcript['id']}/segments"
    batch = [segment(0), segment(1)]
    first = await client.post(url, json=batch, headers=keyed("batch-0-1"))
    again = await client.post(url, json=batch, headers=keyed("batch-0-1"))
    without_key = await client.post(url, json=batch)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert without_key.status_code == 409  # the same batch, not a retry: its numbers are taken
    stored = (await client.get(f"/transcripts/{transcript['id']}")).json()["segments"]
    assert [s["sequence"] for s in stored] == [0, 1]


async def test_a_key_given_to_another_request_is_a_409(
    client: httpx.AsyncClient, room: Json
) -> None:
    await post(client, "/rooms", {"name": "First", "capacity": 1})
    response = await client.post(
        "/rooms", json={"name": "Second", "capacity": 1}, headers=keyed("reused")
    )
    assert response.status_code == 201
    other = {"room_id": room["id"], "title": "t", "language": "en"}
    response = await client.post("/transcripts", json=other, headers=keyed("reused"))
    assert response.status_code == 409, response.text
    assert "already used for another request" in response.json()["detail"]
    assert (await client.get("/transcripts")).json()["items"] == []


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
async def test_a_malformed_key_is_a_422(client: httpx.AsyncClient, key: str) -> None:
    headers = {b"Idempotency-Key": key.encode()}  # bytes: httpx sends them as they are
    response = await client.post("/rooms", json={"name": "k", "capacity": 1}, headers=headers)
    assert response.status_code == 422, response.text
    assert (await client.get("/rooms")).json()["items"] == []


async def test_concurrent_requests_with_one_key_create_once(
    live_client: httpx.AsyncClient,
) -> None:
    body = {"name": "Raced", "capacity": 2}

    async def attempt() -> httpx.Response:
        return await live_client.post("/rooms", json=body, headers=keyed("raced-key"))

    responses = await asyncio.gather(*(attempt() for _ in range(20)))
    statuses = sorted(response.status_code for response in responses)
    # The first is stored; the others replay it, or are told that it is under way (409).
    assert set(statuses) <= {201, 409}, statuses
    created = {response.json()["id"] for response in responses if response.status_code == 201}
    assert len(created) == 1, statuses
    assert await rooms_named("Raced") == 1


@pytest.mark.postgres_only
async def test_a_connection_lost_at_commit_is_answered_as_maybe_stored_and_the_retry_is_safe(
    live_client: httpx.AsyncClient,
) -> None:
    """The server's connection dies as COMMIT is sent; the client is told that the write may
    have been stored, and retrying with the same key leaves exactly one room."""
    engine = get_engine().sync_engine
    killed: list[int] = []

    def kill_at_commit(connection: Connection) -> None:
        if killed:
            return
        pid = connection.connection.driver_connection.get_server_pid()  # type: ignore[union-attr]
        with engine.connect() as admin:  # another pooled connection, in the same greenlet
            # Waits (up to 30 s) until the backend is gone.
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 30000)")
        killed.append(pid)

    body = {"name": "In doubt", "capacity": 2}
    event.listen(engine, "commit", kill_at_commit)
    try:
        first = await live_client.post("/rooms", json=body, headers=keyed("doubt-1"))
    finally:
        event.remove(engine, "commit", kill_at_commit)
    assert killed
    assert first.status_code == 503, first.text
    assert "may have been stored" in first.json()["detail"]
    assert "Idempotency-Key" in first.json()["detail"]
    assert first.headers["Retry-After"]
    retry = await live_client.post("/rooms", json=body, headers=keyed("doubt-1"))
    assert retry.status_code == 201, retry.text
    again = await live_client.post("/rooms", json=body, headers=keyed("doubt-1"))
    assert again.json() == retry.json()
    assert await rooms_named("In doubt") == 1


def test_the_key_is_documented_on_every_create() -> None:
    from {{ cookiecutter.package_name }}.main import app

    paths: dict[str, Any] = app.openapi()["paths"]
    creates = [
        operation
        for operations in paths.values()
        for method, operation in operations.items()
        if method == "post" and "201" in operation["responses"]
    ]
    assert len(creates) == 5
    for operation in creates:
        names = {parameter["name"] for parameter in operation.get("parameters", [])}
        assert "Idempotency-Key" in names, operation["operationId"]
