"""The engine, the session factory and the per-request session dependency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import StaticPool

from {{ cookiecutter.package_name }}.core.config import Settings
from {{ cookiecutter.package_name }}.core.database import (
    Base,
    SessionDep,
    create_engine,
    dispose_engine,
    get_engine,
    get_session,
    get_sessionmaker,
    session_scope,
)

from tests.harness import rolled_back_connection, savepoint_sessionmaker, settings_for
from tests.models import Note, Tag


def sqlite_settings(path: Path | str) -> Settings:
    return settings_for(f"sqlite+aiosqlite:///{path}")


async def count_notes(session: AsyncSession) -> int:
    return (await session.scalar(select(func.count()).select_from(Note))) or 0


async def test_session_commits_and_reads_back(session: AsyncSession) -> None:
    session.add(Note(title="first"))
    await session.commit()
    stored = await session.scalar(select(Note).where(Note.title == "first"))
    assert stored is not None
    assert stored.id is not None


async def test_session_rollback_discards_pending_changes(session: AsyncSession) -> None:
    session.add(Note(title="discarded"))
    await session.flush()
    await session.rollback()
    assert await count_notes(session) == 0


async def test_objects_stay_loaded_after_commit(session: AsyncSession) -> None:
    note = Note(title="loaded")
    session.add(note)
    await session.commit()
    # expire_on_commit=False: reading an attribute after commit needs no lazy load
    # (which would raise MissingGreenlet under asyncio).
    assert note.title == "loaded"
    assert note.created_at is not None


async def test_committed_rows_do_not_leak_out_of_a_test(engine: AsyncEngine) -> None:
    # Exactly what the `session` fixture does, twice: a commit inside the first test
    # transaction must be invisible once that transaction is rolled back.
    async with (
        rolled_back_connection(engine) as connection,
        savepoint_sessionmaker(connection)() as session,
    ):
        session.add(Note(title="leak?"))
        await session.commit()
        assert await count_notes(session) == 1
    async with (
        rolled_back_connection(engine) as connection,
        savepoint_sessionmaker(connection)() as session,
    ):
        assert await count_notes(session) == 0


async def test_session_scope_commits_when_the_block_succeeds(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(session_factory) as session:
        session.add(Note(title="kept"))
    async with session_factory() as session:
        assert await count_notes(session) == 1


async def test_session_scope_rolls_back_when_the_block_raises(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:

    async def write_then_fail() -> None:
        async with session_scope(session_factory) as session:
            session.add(Note(title="lost"))
            await session.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await write_then_fail()
    async with session_factory() as session:
        assert await count_notes(session) == 0


def app_with_routes(session_factory: async_sessionmaker[AsyncSession]) -> FastAPI:
    """A small app whose routes use SessionDep, its sessions in the test's transaction."""
    app = FastAPI()

    async def test_session() -> AsyncIterator[AsyncSession]:
        async with session_scope(session_factory) as session:
            yield session

    app.dependency_overrides[get_session] = test_session

    @app.post("/notes/{title}")
    async def create_note(title: str, session: SessionDep) -> dict[str, str]:
        # No flush: a duplicate title only fails in the commit after the handler returns.
        session.add(Note(title=title))
        return {"title": title}

    @app.post("/notes/{title}/fail")
    async def create_then_fail(title: str, session: SessionDep) -> None:
        session.add(Note(title=title))
        await session.flush()
        raise HTTPException(status_code=400, detail="refused after writing")

    return app


async def call(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path)


async def test_dependency_commits_a_successful_request(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    response = await call(app_with_routes(session_factory), "/notes/stored")
    assert response.status_code == 200
    async with session_factory() as session:
        assert await count_notes(session) == 1


async def test_dependency_rolls_back_when_the_handler_raises(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    response = await call(app_with_routes(session_factory), "/notes/undone/fail")
    assert response.status_code == 400
    async with session_factory() as session:
        assert await count_notes(session) == 0


async def test_a_failed_commit_reaches_the_client_as_a_server_error(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    app = app_with_routes(session_factory)
    assert (await call(app, "/notes/twice")).status_code == 200
    # The second insert violates the unique title only at commit time, after the handler
    # returned: the client must not be told it worked.
    response = await call(app, "/notes/twice")
    assert response.status_code == 500
    async with session_factory() as session:
        assert await count_notes(session) == 1


async def test_get_session_uses_the_configured_database(
    tmp_path: Path, environ: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "configured.db"
    environ.setenv("DATABASE_URL", f"sqlite:///{database}")
    async with get_engine().begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    dependency = get_session()
    session = await anext(dependency)
    session.add(Note(title="through get_session"))
    with pytest.raises(StopAsyncIteration):
        await anext(dependency)
    async with get_sessionmaker()() as check:
        assert await count_notes(check) == 1
    assert get_engine().url.database == str(database)
    assert database.exists()


async def test_dispose_engine_forgets_the_engine_and_is_safe_to_repeat(
    tmp_path: Path, environ: pytest.MonkeyPatch
) -> None:
    environ.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'a.db'}")
    first = get_engine()
    assert get_sessionmaker().kw["bind"] is first
    await dispose_engine()
    await dispose_engine()
    assert get_engine() is not first


async def test_foreign_keys_are_enforced_on_every_backend(session: AsyncSession) -> None:
    session.add(Tag(note_id=12345))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_in_memory_sqlite_is_shared_by_every_session() -> None:
    engine = create_engine(sqlite_settings(":memory:"))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        factory = async_sessionmaker(engine, expire_on_commit=False)
        async with factory() as writer:
            writer.add(Note(title="shared"))
            await writer.commit()
        async with factory() as reader:
            assert await count_notes(reader) == 1
    finally:
        await engine.dispose()


async def test_sqlite_file_database_uses_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    engine = create_engine(sqlite_settings(tmp_path / "pragmas.db"))
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}


async def test_sqlite_migration_engine_can_turn_foreign_keys_off(tmp_path: Path) -> None:
    engine = create_engine(sqlite_settings(tmp_path / "fk.db"), sqlite_foreign_keys=False)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 0
    finally:
        await engine.dispose()


async def test_sqlite_rolls_back_ddl_and_data_together(tmp_path: Path) -> None:
    engine = create_engine(sqlite_settings(tmp_path / "ddl.db"))
    try:

        async def create_then_fail() -> None:
            async with engine.begin() as connection:
                await connection.exec_driver_sql("CREATE TABLE scratch (id INTEGER)")
                await connection.exec_driver_sql("INSERT INTO scratch VALUES (1)")
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            await create_then_fail()
        async with engine.connect() as connection:
            names = await connection.run_sync(
                lambda sync: sync.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE name = 'scratch'"
                ).all()
            )
    finally:
        await engine.dispose()
    assert names == []


async def test_concurrent_read_then_write_transactions_on_sqlite_never_hit_a_lock(
    tmp_path: Path,
) -> None:
    engine = create_engine(sqlite_settings(tmp_path / "busy.db"))
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


def test_postgresql_engine_uses_the_pool_settings() -> None:
    settings = settings_for(
        "postgresql://svc:pw@db.invalid/app",
        database_pool_size=3,
        database_max_overflow=2,
        database_pool_timeout=4.5,
        database_pool_recycle=60,
    )
    engine = create_engine(settings)
    pool = engine.sync_engine.pool
    assert engine.url.drivername == "postgresql+asyncpg"
    assert (pool.size(), pool.timeout(), pool._recycle) == (3, 4.5, 60)  # type: ignore[attr-defined]
    # SQLAlchemy's own pre-ping (three round trips) is replaced by core/database/liveness.py.
    assert pool._pre_ping is False
    assert engine.sync_engine.pool._max_overflow == 2  # type: ignore[attr-defined]


def test_a_sqlite_file_engine_uses_the_pool_settings_and_memory_one_connection(
    tmp_path: Path,
) -> None:
    file_engine = create_engine(
        settings_for(f"sqlite:///{tmp_path / 'app.db'}", database_pool_size=7)
    )
    pool = file_engine.sync_engine.pool
    assert (pool.size(), pool._max_overflow) == (7, 0)  # type: ignore[attr-defined]
    memory_engine = create_engine(settings_for("sqlite://", database_pool_size=7))
    assert isinstance(memory_engine.sync_engine.pool, StaticPool)


async def connect_arguments(engine: AsyncEngine) -> dict[str, Any]:
    """The keyword arguments the engine would pass to asyncpg.connect() (no connection made)."""
    captured: dict[str, Any] = {}

    @event.listens_for(engine.sync_engine, "do_connect")
    def capture(_dialect: Any, _record: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        captured.update(kwargs)
        raise ConnectionRefusedError("captured; not connecting")

    with pytest.raises(ConnectionRefusedError, match="captured"):
        await engine.connect()
    await engine.dispose()
    return captured


async def test_postgresql_connections_carry_the_service_name() -> None:
    settings = settings_for("postgresql://svc:pw@db.invalid/app", app_name="Billing")
    arguments = await connect_arguments(create_engine(settings))
    assert arguments["server_settings"] == {"application_name": "Billing"}
    assert "statement_cache_size" not in arguments


async def test_behind_pgbouncer_no_prepared_statement_outlives_its_transaction() -> None:
    settings = settings_for("postgresql://svc:pw@bouncer/app", database_pgbouncer=True)
    engine = create_engine(settings)
    assert engine.url.query == {"prepared_statement_cache_size": "0"}
    arguments = await connect_arguments(engine)
    assert arguments["statement_cache_size"] == 0
    names = {arguments["prepared_statement_name_func"]() for _ in range(3)}
    assert len(names) == 3
