"""The domain's migrations: a clean round trip, data kept, batch mode and rollback on SQLite."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.package_name }}.main import app

from tests.harness import serve
from tests.migrating import (
    PROJECT_ROOT,
    alembic_config,
    config_file_with,
    migrate_and_inspect,
    start_cli,
)

FIRST = "3a5c1e9d7b20"
HEAD = "dbfa39f6e853"

FAILING_REVISION = '''
"""Alter summaries in batch mode, then fail."""

import sqlalchemy as sa
from alembic import op

revision = "f0000000fai2"
down_revision = "{head}"


def upgrade() -> None:
    with op.batch_alter_table("summaries", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("rating", sa.Integer, nullable=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade() -> None:
    pass
'''


ADD_RATING_REVISION = '''
"""summaries.rating: an ALTER TABLE, which waits for every transaction that read the table."""

import sqlalchemy as sa
from alembic import op

revision = "c0000000rate"
down_revision = "{head}"


def upgrade() -> None:
    op.add_column("summaries", sa.Column("rating", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("summaries", "rating")
'''
# Lock waits seen on the summaries table, and by whom.
WAITING_FOR_SUMMARIES = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
    " WHERE c.relname = 'summaries' AND NOT l.granted"
)


def schema(connection: Connection) -> dict[str, Any]:
    """Everything a migration may leave behind: tables, columns, indexes, constraints, types."""
    inspector = inspect(connection)
    found: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        found[table] = {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"])
                for column in inspector.get_columns(table)
            ],
            "indexes": sorted(index["name"] or "" for index in inspector.get_indexes(table)),
            "unique": sorted(c["name"] or "" for c in inspector.get_unique_constraints(table)),
            "checks": sorted(c["name"] or "" for c in inspector.get_check_constraints(table)),
            "foreign_keys": sorted(fk["name"] or "" for fk in inspector.get_foreign_keys(table)),
        }
    if connection.dialect.name == "postgresql":
        found["types"] = sorted(
            connection.exec_driver_sql(
                "SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                " WHERE n.nspname = 'public' AND t.typtype = 'e'"
            ).scalars()
        )
    return found


async def test_round_trip_leaves_no_trace_and_rebuilds_the_same_schema(
    empty_database_url: str,
) -> None:
    first = await migrate_and_inspect(empty_database_url, [("upgrade", "head")], schema)
    assert {"rooms", "user_sessions", "transcripts", "transcript_segments", "summaries"} < set(
        first
    )
    assert "uq_user_sessions_open" in first["user_sessions"]["indexes"]
    assert "ck_summaries_kind_known" in first["summaries"]["checks"]
    if "types" in first:
        assert first["types"] == ["transcript_status"]
    empty = await migrate_and_inspect(empty_database_url, [("downgrade", "base")], schema)
    assert empty == {
        "alembic_version": {
            "columns": [("version_num", "VARCHAR(32)", False)],
            "indexes": [],
            "unique": [],
            "checks": [],
            "foreign_keys": [],
        },
        **({"types": []} if "types" in first else {}),
    }
    again = await migrate_and_inspect(empty_database_url, [("upgrade", "head")], schema)
    assert again == first


# One row of each table with an integer id; :rooms and :transcripts are rows inserted before.
ID_TABLES = {
    "rooms": "INSERT INTO rooms (name, capacity) VALUES (:text, 1)",
    "user_sessions": "INSERT INTO user_sessions (user_id, room_id) VALUES (:text, :rooms)",
    "transcripts": "INSERT INTO transcripts (room_id, title, language, status)"
    " VALUES (:rooms, :text, 'en', 'recording')",
    "summaries": "INSERT INTO summaries (transcript_id, content, model)"
    " VALUES (:transcripts, :text, 'm')",
}


def ids_of_a_deleted_and_the_next_row(connection: Connection) -> dict[str, tuple[int, int]]:
    """For each table, the id of its newest row, deleted at once, and of the row after it."""
    ids: dict[str, tuple[int, int]] = {}

    def insert(table: str, label: str) -> int:
        kept = {earlier: following for earlier, (_, following) in ids.items()}
        row = connection.execute(text(f"{ID_TABLES[table]} RETURNING id"), {**kept, "text": label})
        return int(row.scalar_one())

    for table in ID_TABLES:
        deleted = insert(table, "deleted")
        connection.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": deleted})
        ids[table] = deleted, insert(table, "next")
    return ids


async def test_ids_are_never_given_again_after_a_delete(empty_database_url: str) -> None:
    """A deleted row's id is not reused (SQLite reuses the highest rowid unless AUTOINCREMENT
    says otherwise; PostgreSQL's identities never do), so a retry's replayed answer or a
    client's link never names another row: the same on both databases."""
    ids = await migrate_and_inspect(
        empty_database_url, [("upgrade", "head")], ids_of_a_deleted_and_the_next_row
    )
    assert ids.keys() == ID_TABLES.keys()
    assert [table for table, (deleted, following) in ids.items() if following <= deleted] == []


def insert_summary(connection: Connection) -> None:
    connection.execute(text("INSERT INTO rooms (name, capacity) VALUES ('r', 1)"))
    connection.execute(
        text(
            "INSERT INTO transcripts (room_id, title, language, status)"
            " VALUES (1, 't', 'en', 'recording')"
        )
    )
    connection.execute(
        text("INSERT INTO summaries (transcript_id, content, model) VALUES (1, 'kept', 'm')")
    )


async def test_summary_kinds_migration_keeps_rows_and_checks_new_ones(
    empty_database_url: str,
) -> None:
    await migrate_and_inspect(empty_database_url, [("upgrade", FIRST)], insert_summary)

    def upgraded(connection: Connection) -> list[Any]:
        rows = connection.execute(text("SELECT content, kind FROM summaries")).all()
        with (
            pytest.raises(IntegrityError, match=r"ck_summaries_kind_known|CHECK"),
            connection.begin_nested(),
        ):
            connection.execute(
                text(
                    "INSERT INTO summaries (transcript_id, content, model, kind)"
                    " VALUES (1, 'c', 'm', 'poem')"
                )
            )
        return [tuple(row) for row in rows]

    assert await migrate_and_inspect(empty_database_url, [("upgrade", "head")], upgraded) == [
        ("kept", "abstract")
    ]

    def downgraded(connection: Connection) -> list[Any]:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM summaries"))][:1]

    rows = await migrate_and_inspect(empty_database_url, [("downgrade", FIRST)], downgraded)
    assert len(rows) == 1
    assert "kept" in rows[0]
    assert "abstract" not in rows[0]


async def test_a_batch_migration_that_fails_halfway_changes_nothing(
    empty_database_url: str, tmp_path: Path
) -> None:
    before = await migrate_and_inspect(empty_database_url, [("upgrade", "head")], schema)
    await migrate_and_inspect(empty_database_url, [], insert_summary)
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "f0000000fai2_fail.py").write_text(FAILING_REVISION.format(head=HEAD))
    config = alembic_config()
    shipped = PROJECT_ROOT / "migrations" / "versions"
    config.set_main_option("version_locations", os.pathsep.join(map(str, (shipped, versions))))
    with pytest.raises(Exception, match="no_such_table"):
        await migrate_and_inspect(empty_database_url, [("upgrade", "head")], schema, config)

    def contents(connection: Connection) -> tuple[dict[str, Any], list[Any]]:
        rows = connection.execute(text("SELECT content FROM summaries")).scalars().all()
        return schema(connection), list(rows)

    assert await migrate_and_inspect(empty_database_url, [], contents) == (before, ["kept"])


@pytest.mark.postgres_only
@pytest.mark.slow
async def test_a_migration_behind_a_long_transaction_gives_up_in_one_line_and_the_service_answers(
    empty_database_url: str, environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environ.setenv("DATABASE_URL", empty_database_url)  # for the service, and Alembic's env.py
    await migrate_and_inspect(empty_database_url, [("upgrade", "head")], insert_summary)
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "c0000000rate_rating.py").write_text(ADD_RATING_REVISION.format(head=HEAD))
    config_file = str(config_file_with(versions, tmp_path))
    engine = create_async_engine(empty_database_url, poolclass=NullPool)
    try:
        async with engine.connect() as blocker, engine.connect() as observer, serve(app) as client:
            # A long transaction that read the table: the ALTER TABLE must wait for its end.
            await blocker.execute(text("SELECT count(*) FROM summaries"))
            started = time.monotonic()
            migration = start_cli(
                empty_database_url,
                *("-c", config_file, "upgrade", "head"),
                DATABASE_MIGRATION_LOCK_TIMEOUT="2",
            )
            deadline = started + 60
            while not await observer.scalar(WAITING_FOR_SUMMARIES):
                await observer.rollback()  # pg_locks is read afresh in each transaction
                assert migration.poll() is None, migration.communicate()
                assert time.monotonic() < deadline, "the migration never waited for its lock"
                await asyncio.sleep(0.05)
            # The service's reads and writes of the table queue behind the waiting ALTER
            # TABLE, for the lock timeout at most: answered while the blocker still runs.
            body = {"transcript_id": 1, "content": "during", "model": "m"}
            created, listed = await asyncio.wait_for(
                asyncio.gather(
                    client.post("/summaries", json=body),
                    client.get("/summaries", params={"transcript_id": 1}),
                ),
                timeout=30,
            )
            _, stderr = await asyncio.to_thread(migration.communicate, timeout=60)
            gave_up_after = time.monotonic() - started
            await blocker.rollback()
    finally:
        await engine.dispose()
        if "migration" in locals() and migration.poll() is None:
            migration.kill()
    assert created.status_code == 201, created.text
    assert listed.status_code == 200, listed.text
    assert migration.returncode != 0
    assert "Traceback" not in stderr
    reason = stderr.strip().splitlines()[-1]
    assert reason.startswith("{{ cookiecutter.package_name }}: migration gave up"), stderr
    assert "DATABASE_MIGRATION_LOCK_TIMEOUT (2 s)" in reason
    assert "ALTER TABLE summaries ADD COLUMN rating" in reason
    assert "run it again" in reason
    password = make_url(empty_database_url).password
    assert not password or password not in stderr
    assert gave_up_after < 30

    def after(connection: Connection) -> tuple[object, list[str]]:
        version = connection.scalar(text("SELECT version_num FROM alembic_version"))
        return version, [column["name"] for column in inspect(connection).get_columns("summaries")]

    version, columns = await migrate_and_inspect(empty_database_url, [], after)
    assert version == HEAD
    assert "rating" not in columns
