"""Idempotent requests: the answer given to each create made under an Idempotency-Key.

Revision ID: dbfa39f6e853
Revises: 5d7e2c9a4b16
Create Date: 2026-12-06 19:23:48.918401+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from {{ cookiecutter.package_name }}.core.database.mixins import utcnow

# On PostgreSQL each statement waits at most DATABASE_MIGRATION_LOCK_TIMEOUT for a lock and
# runs at most DATABASE_MIGRATION_STATEMENT_TIMEOUT. One that needs longer says so first, in
# upgrade(): op.execute("SET LOCAL statement_timeout = '10min'") (this migration only).
# Index a table in use concurrently, in an autocommit block (README: Migrations).
# `uv run python migrations/lint.py` checks the SQL with squawk.

# revision identifiers, used by Alembic.
revision: str = "dbfa39f6e853"
down_revision: str | Sequence[str] | None = "5d7e2c9a4b16"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "idempotent_requests",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=utcnow(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=utcnow(), nullable=False
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotent_requests")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("idempotent_requests")
