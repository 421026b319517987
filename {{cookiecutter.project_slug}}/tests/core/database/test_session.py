"""The session factory, session_scope and the per-request session dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from {{ cookiecutter.package_name }}.core.database import (
    Base,
    SessionDep,
    get_engine,
    session_scope,
)
from {{ cookiecutter.package_name }}.core.database.engine import (
    engine_from_settings,
)
from {{ cookiecutter.package_name }}.core.database.session import (
    get_database,
    get_session,
)

from tests.harness import (
    postgres_server_url,
    rolled_back_connection,
    savepoint_sessionmaker,
    settings_for,
)
from tests.models import Note, Tag


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


def test_a_test_database_url_that_is_not_postgresql_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tests would otherwise run on in-memory SQLite while the run says PostgreSQL.
    monkeypatch.setenv("TEST_DATABASE_URL", "sqlite:///./tests.db")
    with pytest.raises(ValueError, match="must name a PostgreSQL server; unset it"):
        postgres_server_url()


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
    async with get_database().sessions() as check:
        assert await count_notes(check) == 1
    assert get_engine().url.database == str(database)
    assert database.exists()


async def test_foreign_keys_are_enforced_on_every_backend(session: AsyncSession) -> None:
    session.add(Tag(note_id=12345))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_in_memory_sqlite_is_shared_by_every_session() -> None:
    engine = engine_from_settings(settings_for("sqlite+aiosqlite:///:memory:"))
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
