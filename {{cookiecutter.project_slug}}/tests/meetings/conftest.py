"""Fixtures of the meetings tests: API helpers, and a client on committed transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from {{ cookiecutter.package_name }}.main import app

from tests.harness import serve
from tests.meetings.api import Json, post


@pytest.fixture
async def room(client: httpx.AsyncClient) -> Json:
    """A room for four."""
    return await post(client, "/rooms", {"name": "Board room", "capacity": 4})


@pytest.fixture
async def transcript(client: httpx.AsyncClient, room: Json) -> Json:
    """A transcript being recorded in ``room``."""
    body = {"room_id": room["id"], "title": "Weekly sync", "language": "en"}
    return await post(client, "/transcripts", body)


@pytest.fixture
async def live_client(committed_database: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app on its own engine and pool, where every request really commits."""
    async with serve(app) as client:
        yield client
