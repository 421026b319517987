"""SQLite made transactional: BEGIN IMMEDIATE, foreign keys, WAL and a busy timeout."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from {{ cookiecutter.package_name }}.core.database import Base, session_scope
from {{ cookiecutter.package_name }}.core.database.engine import engine_from_settings
from {{ cookiecutter.package_name }}.core.database.session import get_database
from {{ cookiecutter.package_name }}.core.database.sqlite import BUSY_SLICE_MS
from {{ cookiecutter.package_name }}.core.unavailable import unavailable_cause

from tests.harness import settings_for
from tests.models import Note
from tests.sqlite_writers import HOLD

PROJECT_ROOT = Path(__file__).parents[3]


def file_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def shared_sqlite_file(
    environ: pytest.MonkeyPatch, sqlite_schema: Path, tmp_path: Path
) -> AsyncIterator[str]:
    """DATABASE_URL set to a SQLite file with every table, waiting at most 1 s for the write
    lock; yields the URL, and checks the file's integrity at the end."""
    url = file_url(Path(shutil.copy(sqlite_schema, tmp_path / "shared.db")))
    environ.setenv("DATABASE_URL", url)
    environ.setenv("DATABASE_SQLITE_BUSY_TIMEOUT_MS", "1000")
    yield url
    with closing(sqlite3.connect(tmp_path / "shared.db")) as check:
        assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def stored_titles() -> set[str]:
    async with get_database().reads() as db:
        return set(await db.scalars(select(Note.title)))


@pytest.mark.parametrize(("migrating", "busy_timeout"), [(False, BUSY_SLICE_MS), (True, 5000)])
async def test_a_file_database_uses_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path, migrating: bool, busy_timeout: int
) -> None:
    # The service's writers wait for the lock in turns (WriteTurns), SQLite only briefly;
    # Alembic waits in SQLite for the whole DATABASE_SQLITE_BUSY_TIMEOUT_MS.
    settings = settings_for(file_url(tmp_path / "pragmas.db"))
    engine = engine_from_settings(settings, migrating=migrating)
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 0 if migrating else 1,
        "busy_timeout": busy_timeout,
    }


async def test_the_migration_engine_can_turn_foreign_keys_off(tmp_path: Path) -> None:
    engine = engine_from_settings(settings_for(file_url(tmp_path / "fk.db")), migrating=True)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 0
    finally:
        await engine.dispose()


async def test_ddl_and_data_roll_back_together(tmp_path: Path) -> None:
    engine = engine_from_settings(settings_for(file_url(tmp_path / "ddl.db")))
    try:

        async def create_then_fail() -> None:
            async with engine.begin() as connection:
                await connection.exec_driver_sql("CREATE TABLE scratch (id INTEGER)")
                await connection.exec_driver_sql("INSERT INTO scratch VALUES (1)")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            await create_then_fail()
        async with engine.connect() as connection:
            names = await connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name = 'scratch'"
            )
            assert names.all() == []
    finally:
        await engine.dispose()


async def test_begin_takes_the_write_lock_before_the_first_read(tmp_path: Path) -> None:
    url = file_url(tmp_path / "lock.db")
    holder = engine_from_settings(settings_for(url))
    waiter = engine_from_settings(settings_for(url, database_sqlite_busy_timeout_ms=50))
    try:
        async with holder.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with holder.begin() as connection:
            await connection.execute(select(Note.id))  # only a read, after BEGIN IMMEDIATE
            with pytest.raises(OperationalError, match="database is locked"):
                async with waiter.begin() as blocked:
                    await blocked.execute(select(Note.id))
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_concurrent_read_then_write_transactions_lose_no_update(
    shared_sqlite_file: str,
) -> None:
    async with session_scope() as db:
        await db.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        await db.execute(text("INSERT INTO counter VALUES (1, 0)"))

    async def increment() -> None:
        async with session_scope() as db:
            value = (await db.execute(text("SELECT n FROM counter"))).scalar_one()
            await asyncio.sleep(0.001)
            await db.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})

    # BEGIN IMMEDIATE makes them queue; plain BEGIN fails most with "database is locked"
    # or loses increments.
    await asyncio.gather(*(increment() for _ in range(30)))
    async with session_scope() as db:
        assert (await db.execute(text("SELECT n FROM counter"))).scalar_one() == 30


async def test_url_options_reach_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "read-only.db"
    sqlite3.connect(path).close()
    engine = engine_from_settings(settings_for(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"))
    try:
        # mode=ro reached sqlite3: the first write (switching the file to WAL) is refused.
        with pytest.raises(OperationalError, match="readonly"):
            async with engine.connect() as connection:
                await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        await engine.dispose()


async def busy_timeout_ms(queued: int) -> int:
    """1 s, or more on a machine so loaded that ``queued`` writes one after another (each a
    read, a pause, an insert) would take longer than a quarter of it."""
    started = time.monotonic()
    for number in range(3):
        async with session_scope() as db:
            await db.scalar(select(Note.id).limit(1))
            await asyncio.sleep(HOLD)
            db.add(Note(title=f"alone {number}"))
    return max(1000, round(4 * queued * (time.monotonic() - started) / 3 * 1000))


async def run_writers(*processes: tuple[str, int, int]) -> list[str]:
    """Run each ``(tag, writers, rounds)`` of tests/sqlite_writers.py in a process of its own,
    all at once and without coverage's tracer (timing matters); returns what failed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(["src", "."]),
        "DATABASE_SQLITE_BUSY_TIMEOUT_MS": str(await busy_timeout_ms(sum(p[1] for p in processes))),
    }
    children = [
        await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.sqlite_writers", tag, str(writers), str(rounds)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for tag, writers, rounds in processes
    ]
    failures = []
    for child in children:
        output, _ = await asyncio.wait_for(child.communicate(), timeout=120)
        if child.returncode:
            failures.append(output.decode())
    return failures


@pytest.mark.slow
async def test_writers_of_one_process_and_of_two_never_find_the_file_locked(
    shared_sqlite_file: str,
) -> None:
    # Ten writers in one process, five in another, five readers in each. Each write holds
    # the lock a few milliseconds: waiting in SQLite's own busy handler, with its backoff of
    # up to 100 ms a try, some waited past the 1 s busy timeout.
    assert await run_writers(("here", 10, 10), ("there", 5, 10)) == []
    titles = await stored_titles()
    assert len({title for title in titles if title.split()[0] in ("here", "there")}) == 150


async def test_a_writer_waits_no_longer_than_the_busy_timeout_for_its_processs_turn(
    shared_sqlite_file: str, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_SQLITE_BUSY_TIMEOUT_MS", "300")
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold_the_turn() -> None:  # a writer of this process that takes its time
        async with session_scope() as db:
            db.add(Note(title="slow"))
            await db.flush()
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_turn())
    await asyncio.wait_for(holding.wait(), timeout=30)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked") as raised:
        async with session_scope() as db:
            db.add(Note(title="never"))
    waited = time.monotonic() - started
    release.set()
    await holder
    assert unavailable_cause(raised.value) == "locked"
    assert 0.3 <= waited < 3  # the busy timeout, not forever
    assert await stored_titles() == {"slow"}


async def test_a_writer_waits_no_longer_than_the_busy_timeout_for_a_lock_held_longer(
    shared_sqlite_file: str, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_SQLITE_BUSY_TIMEOUT_MS", "300")
    holder = sqlite3.connect(shared_sqlite_file.removeprefix("sqlite+aiosqlite:///"))
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as raised:
            async with session_scope() as db:
                db.add(Note(title="never"))
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert unavailable_cause(raised.value) == "locked"
    assert 0.3 <= waited < 3  # the busy timeout, not SQLite's backoff nor forever
    async with session_scope() as db:  # the lock is free again: writes go through
        db.add(Note(title="later"))
    assert await stored_titles() == {"later"}
