"""Select the defaults of the chosen database and print the next steps.

cookiecutter runs this hook with the generated project as the working directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATABASE = json.loads(r'''{{ cookiecutter.database | tojson }}''')
DATABASE_URL = json.loads(r'''{{ cookiecutter.__database_url | tojson }}''')
PROJECT_SLUG = json.loads(r'''{{ cookiecutter.project_slug | tojson }}''')
PACKAGE_NAME = json.loads(r'''{{ cookiecutter.package_name | tojson }}''')


def env_text(database_url: str) -> str:
    """Return the content of ``.env`` / ``.env.example`` for ``database_url``."""
    return (
        "# Settings are read from the environment first, then from this file.\n"
        "# Switch databases by changing DATABASE_URL only, e.g.\n"
        "#   sqlite+aiosqlite:///./app.db\n"
        "#   postgresql+asyncpg://user:password@localhost:5432/dbname\n"
        f"DATABASE_URL={database_url}\n"
        "DATABASE_ECHO=false\n"
    )


def write_env_files(project_dir: Path, database_url: str) -> list[Path]:
    """Write ``.env`` (git-ignored, never overwritten) and ``.env.example``; return the paths."""
    text = env_text(database_url)
    example = project_dir / ".env.example"
    example.write_text(text, encoding="utf-8")
    written = [example]
    env = project_dir / ".env"
    if not env.exists():
        env.write_text(text, encoding="utf-8")
        written.append(env)
    return written


def next_steps(project_slug: str, package_name: str, database: str) -> str:
    """Return the instructions printed after generation."""
    steps = [f"cd {project_slug}"]
    if database == "postgresql":
        steps.append(f"createdb {package_name}   # or point DATABASE_URL in .env at your server")
    steps += [
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"',
        ".venv/bin/alembic upgrade head",
        f".venv/bin/uvicorn {package_name}.main:app --reload",
        ".venv/bin/pytest",
    ]
    return "Next steps:\n" + "\n".join(f"  {step}" for step in steps)


def main() -> int:
    """Write the environment files for the chosen database and print the next steps."""
    write_env_files(Path.cwd(), DATABASE_URL)
    print(next_steps(PROJECT_SLUG, PACKAGE_NAME, DATABASE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
