"""Summaries by kind: the index by transcript, kind and id replaces the one without kind.

On PostgreSQL without blocking the service: the new index is built, and the old one
dropped, while reads and writes go on.

Revision ID: 5d7e2c9a4b16
Revises: 7c1f3a9e2d58
Create Date: 2026-12-06 17:31:00.000000+00:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5d7e2c9a4b16"
down_revision: str | Sequence[str] | None = "7c1f3a9e2d58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("summaries", schema=None) as batch_op:
            batch_op.create_index(
                "ix_summaries_transcript_id_kind_id", ["transcript_id", "kind", "id"], unique=False
            )
            batch_op.drop_index(batch_op.f("ix_summaries_transcript_id_id"))
        return
    # CONCURRENTLY builds and drops an index without blocking writes, and cannot run in a
    # transaction: the block commits what came before. IF (NOT) EXISTS lets a rerun after a
    # failure go on (a failed build leaves an INVALID index: drop it before the rerun).
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_summaries_transcript_id_kind_id",
            "summaries",
            ["transcript_id", "kind", "id"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            op.f("ix_summaries_transcript_id_id"),
            table_name="summaries",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_summaries_transcript_id_id"), ["transcript_id", "id"], unique=False
        )
        batch_op.drop_index("ix_summaries_transcript_id_kind_id")
