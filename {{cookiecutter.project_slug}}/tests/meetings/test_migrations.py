"""The domain's migrations: a clean round trip, data kept, batch mode and rollback on SQLite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.migrating import PROJECT_ROOT, alembic_config, migrate_and_inspect

FIRST = "3a5c1e9d7b20"
SUMMARY_KINDS = "8f2d4b6a1c93"

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
    (versions / "f0000000fai2_fail.py").write_text(FAILING_REVISION.format(head=SUMMARY_KINDS))
    config = alembic_config()
    shipped = PROJECT_ROOT / "migrations" / "versions"
    config.set_main_option("version_locations", os.pathsep.join(map(str, (shipped, versions))))
    with pytest.raises(Exception, match="no_such_table"):
        await migrate_and_inspect(empty_database_url, [("upgrade", "head")], schema, config)

    def contents(connection: Connection) -> tuple[dict[str, Any], list[Any]]:
        rows = connection.execute(text("SELECT content FROM summaries")).scalars().all()
        return schema(connection), list(rows)

    assert await migrate_and_inspect(empty_database_url, [], contents) == (before, ["kept"])
