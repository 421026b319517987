"""Summary kinds validated: the rows already there are checked against the kinds.

Revision ID: 7c1f3a9e2d58
Revises: 8f2d4b6a1c93
Create Date: 2026-12-06 17:30:00.000000+00:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "7c1f3a9e2d58"
down_revision: str | Sequence[str] | None = "8f2d4b6a1c93"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # The previous revision added the constraint NOT VALID (on SQLite, valid already). This
    # scans the table under a lock that lets reads and writes go on; in the same transaction
    # as the ADD CONSTRAINT it would scan under that one's lock, which blocks them.
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE summaries VALIDATE CONSTRAINT ck_summaries_kind_known")


def downgrade() -> None:
    """Downgrade schema."""
