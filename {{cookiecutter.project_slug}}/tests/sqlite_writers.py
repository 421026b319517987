"""Many writers and readers on one SQLite file through the service's own sessions:
``python -m tests.sqlite_writers TAG WRITERS ROUNDS``, with DATABASE_URL set, prints the
error of every write that failed (tests/core/database/test_sqlite.py runs it)."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.core.database import dispose_engine, session_scope
from {{ cookiecutter.package_name }}.core.database.session import get_database

from tests.models import Note

READERS = 5
# How long each write transaction holds the lock after its read, as a handler's own work
# would. Long enough that SQLite's backoff (up to 100 ms a try) matters.
HOLD = 0.005


async def write_while_reading(tag: str, writers: int, rounds: int) -> list[str]:
    """``writers`` tasks commit ``rounds`` notes each (a read, a pause, an insert) while
    readers keep reading; returns the error of every write that failed."""
    done = asyncio.Event()

    async def write(writer: int) -> list[str]:
        errors = []
        for round_ in range(rounds):
            try:
                async with session_scope() as db:
                    await db.scalar(select(func.count()).select_from(Note))
                    await asyncio.sleep(HOLD)
                    db.add(Note(title=f"{tag} {writer} {round_}"))
            except Exception as error:  # what a request would have answered 503 for
                errors.append(str(error).splitlines()[0])
        return errors

    async def read() -> None:
        while not done.is_set():
            async with get_database().reads() as db:
                await db.scalars(select(Note).order_by(Note.id.desc()).limit(50))

    readers = [asyncio.create_task(read()) for _ in range(READERS)]
    try:
        results = await asyncio.gather(*(write(writer) for writer in range(writers)))
    finally:
        done.set()
        await asyncio.gather(*readers)
    return [error for errors in results for error in errors]


async def main(tag: str, writers: int, rounds: int) -> int:
    try:
        errors = await write_while_reading(tag, writers, rounds)
    finally:
        await dispose_engine()
    print("\n".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
