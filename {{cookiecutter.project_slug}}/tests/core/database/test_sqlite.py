"""SQLite made transactional: BEGIN IMMEDIATE, foreign keys, WAL and a busy timeout."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from {{ cookiecutter.package_name }}.core.database import Base
from {{ cookiecutter.package_name }}.core.database.engine import create_engine

from tests.harness import settings_for
from tests.models import Note


def file_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def test_a_file_database_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine(settings_for(file_url(tmp_path / "pragmas.db")))
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}


async def test_the_migration_engine_can_turn_foreign_keys_off(tmp_path: Path) -> None:
    engine = create_engine(settings_for(file_url(tmp_path / "fk.db")), sqlite_foreign_keys=False)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 0
    finally:
        await engine.dispose()


async def test_ddl_and_data_roll_back_together(tmp_path: Path) -> None:
    engine = create_engine(settings_for(file_url(tmp_path / "ddl.db")))
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
    holder = create_engine(settings_for(url))
    waiter = create_engine(settings_for(url, database_sqlite_busy_timeout_ms=50))
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


async def test_concurrent_read_then_write_transactions_never_hit_a_lock(tmp_path: Path) -> None:
    engine = create_engine(settings_for(file_url(tmp_path / "busy.db")))
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"
            )
            await connection.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")

        async def increment() -> None:
            async with engine.begin() as connection:
                value = (await connection.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0.001)
                await connection.execute(text("UPDATE counter SET n = :n"), {"n": value + 1})

        # BEGIN IMMEDIATE makes them queue; plain BEGIN fails most with "database is locked"
        # or loses increments.
        await asyncio.gather(*(increment() for _ in range(30)))
        async with engine.connect() as connection:
            total = (await connection.execute(text("SELECT n FROM counter"))).scalar_one()
    finally:
        await engine.dispose()
    assert total == 30


async def test_url_options_reach_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "read-only.db"
    sqlite3.connect(path).close()
    engine = create_engine(settings_for(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"))
    try:
        # mode=ro reached sqlite3: the first write (switching the file to WAL) is refused.
        with pytest.raises(OperationalError, match="readonly"):
            async with engine.connect() as connection:
                await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        await engine.dispose()
