"""Lint the SQL of the migrations with squawk, PostgreSQL's migration linter.

    uv run python migrations/lint.py            # every revision (CI)
    uv run python migrations/lint.py FILE...    # the revisions in these files (pre-commit)

Each revision is linted on its own, as `alembic upgrade <previous>:<revision> --sql` prints
it for PostgreSQL: squawk then judges it as a change to tables that already hold data. No
database is needed. Rules that do not fit are excluded in .squawk.toml, each with its reason.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import Script, ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Offline mode needs the dialect only: nothing connects to this.
OFFLINE_URL = "postgresql+asyncpg://lint@localhost/lint"


def alembic_config() -> Config:
    """The project's Alembic configuration."""
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["configure_logger"] = False
    return config


def revision_sql(config: Config, script: Script) -> str:
    """The SQL that upgrading to ``script`` from its predecessor runs on PostgreSQL."""
    previous = script.down_revision
    if isinstance(previous, tuple | list):
        previous = previous[0]
    target = f"{previous}:{script.revision}" if previous else script.revision
    config.output_buffer = io.StringIO()
    command.upgrade(config, target, sql=True)
    return config.output_buffer.getvalue()


def chosen_scripts(config: Config, files: list[str]) -> list[Script]:
    """The revisions in ``files``; every revision if none is given."""
    scripts = list(ScriptDirectory.from_config(config).walk_revisions())
    if not files:
        return scripts
    wanted = {Path(file).resolve() for file in files}
    return [script for script in scripts if Path(script.path).resolve() in wanted]


def main(files: list[str], config: Config | None = None) -> int:
    """Write each chosen revision's SQL to a file and run squawk on them; its exit status."""
    os.environ["DATABASE_URL"] = OFFLINE_URL
    config = config or alembic_config()
    scripts = chosen_scripts(config, files)
    if not scripts:
        return 0
    squawk = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"
    with tempfile.TemporaryDirectory(prefix="migration-sql-") as folder:
        paths = []
        for script in scripts:
            path = Path(folder) / f"{Path(script.path).stem}.sql"
            path.write_text(revision_sql(config, script))
            paths.append(str(path))
        squawk_config = str(PROJECT_ROOT / ".squawk.toml")
        linted = subprocess.run([squawk, "--config", squawk_config, *paths], check=False)
        return linted.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
