"""${message}

Revision ID: ${up_revision}
Revises:${" " if down_revision else ""}${down_revision | comma,n}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

# On PostgreSQL each statement waits at most DATABASE_MIGRATION_LOCK_TIMEOUT for a lock and
# runs at most DATABASE_MIGRATION_STATEMENT_TIMEOUT. One that needs longer says so first, in
# upgrade(): op.execute("SET LOCAL statement_timeout = '10min'") (this migration only).
# Index a table in use concurrently, in an autocommit block (README: Migrations).
# `uv run python migrations/lint.py` checks the SQL with squawk.

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
