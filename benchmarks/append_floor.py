"""B5's floor: how long an append holds SQLite's write lock (from its BEGIN IMMEDIATE to its
COMMIT's return), one writer appending one segment at a time through SessionDep's own
dependency, alone in its event loop (no HTTP, no readers, no other writer).

The lock is one for every process, so a service's appends/s on SQLite can never beat
1 / (this hold), however many workers serve it; under load each of the hold's round trips to
aiosqlite's thread also waits behind whatever else the event loop has to run. run.py runs
this with service_env (the baked package on PYTHONPATH, DATABASE_URL a migrated database)
and reads the JSON it prints.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import statistics
import sys
import time
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

package = os.environ["BENCH_PACKAGE"]
session_module = importlib.import_module(f"{package}.core.database.session")
service = importlib.import_module(f"{package}.meetings.service")
models = importlib.import_module(f"{package}.meetings.models")
schemas = importlib.import_module(f"{package}.meetings.schemas")


async def measure(appends: int) -> dict[str, float]:
    write_session = asynccontextmanager(session_module.get_session)  # what SessionDep runs
    holds: list[float] = []
    began = 0.0

    def before_begin(_connection: Any) -> None:
        nonlocal began
        began = time.perf_counter()

    def after_commit(_session: Session) -> None:
        holds.append(time.perf_counter() - began)

    # Before the template's own "begin" listener, which sends BEGIN IMMEDIATE.
    event.listen(session_module.get_engine().sync_engine, "begin", before_begin, insert=True)
    event.listen(Session, "after_commit", after_commit)
    async with write_session() as db:
        room = models.Room(name=f"floor {time.time_ns()}", capacity=1)
        db.add(room)
        await db.flush()
        transcript = models.Transcript(room_id=room.id, title="floor", language="en")
        db.add(transcript)
        await db.flush()
        transcript_id = transcript.id

    async def append(sequence: int) -> None:
        segment = schemas.SegmentCreate(
            sequence=sequence, speaker="ana", start_ms=sequence, end_ms=sequence, text="floor"
        )
        async with write_session() as db:
            await service.append_segments(db, transcript_id, [segment])

    for sequence in range(appends // 5):  # warm up: statement caches, pool
        await append(sequence)
    holds.clear()
    cpu_started = time.thread_time()
    for sequence in range(appends // 5, appends // 5 + appends):
        await append(sequence)
    cpu = time.thread_time() - cpu_started
    await session_module.dispose_engine()
    assert len(holds) == appends, f"{len(holds)} commits timed for {appends} appends"
    return {"hold_ms": statistics.median(holds) * 1000, "loop_cpu_ms": cpu / appends * 1000}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(int(sys.argv[1])))))
