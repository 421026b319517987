"""B2 baseline: the same GET /rooms/{id} on a bare asyncpg pool, and a route with no database.

Started by run.py with uvicorn; RAW_DSN names the benchmark database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class RoomRead(BaseModel):
    id: int
    name: str
    capacity: int
    description: str | None
    created_at: datetime
    updated_at: datetime


pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global pool
    # As many connections as the generated service may open (pool 15, no overflow).
    pool = await asyncpg.create_pool(os.environ["RAW_DSN"], min_size=5, max_size=15)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/rooms/{room_id}")
async def read_room(room_id: int) -> RoomRead:
    assert pool is not None
    row = await pool.fetchrow(
        "SELECT id, name, capacity, description, created_at, updated_at FROM rooms WHERE id = $1",
        room_id,
    )
    if row is None:
        raise HTTPException(status_code=404)
    return RoomRead(**dict(row))


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}
