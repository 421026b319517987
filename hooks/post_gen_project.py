"""Select the defaults of the chosen database and the lock of the chosen Python, drop the
unchosen example domain, print next steps.

cookiecutter runs this hook with the generated project as the working directory.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DATABASE = json.loads(r'''{{ cookiecutter.database | tojson }}''')
DATABASE_URL = json.loads(r'''{{ cookiecutter.__database_url | tojson }}''')
PROJECT_SLUG = json.loads(r'''{{ cookiecutter.project_slug | tojson }}''')
PACKAGE_NAME = json.loads(r'''{{ cookiecutter.package_name | tojson }}''')
EXAMPLE_DOMAIN = json.loads(r'''{{ cookiecutter.example_domain | tojson }}''')
PYTHON_VERSION = json.loads(r'''{{ cookiecutter.python_version | tojson }}''')

# One uv.lock per python_version (the resolution depends on requires-python), made by
# scripts/update_locks.py; the chosen one becomes uv.lock.
LOCKS = "uv-locks"

# Every file and folder that belongs to an example domain, relative to the project.
DOMAIN_PATHS = {
    "meetings": [
        "src/{package}/meetings",
        "tests/meetings",
        "migrations/versions/2026_11_27_2152-3a5c1e9d7b20_meetings.py",
        "migrations/versions/2026_11_27_2152-8f2d4b6a1c93_summary_kinds.py",
        "migrations/versions/2026_12_06_1730-7c1f3a9e2d58_summary_kinds_validated.py",
        "migrations/versions/2026_12_06_1731-5d7e2c9a4b16_summaries_by_kind.py",
        "migrations/versions/2026_12_06_1923-dbfa39f6e853_idempotent_requests.py",
    ],
}


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


def unchosen_domain_paths(project_dir: Path, chosen: str, package_name: str) -> list[Path]:
    """Return the paths of every example domain except ``chosen``."""
    return [
        project_dir / pattern.format(package=package_name)
        for domain, patterns in DOMAIN_PATHS.items()
        if domain != chosen
        for pattern in patterns
    ]


def remove_paths(paths: list[Path]) -> None:
    """Delete each file or folder in ``paths``; a missing one means the template is broken."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def select_lock(project_dir: Path, python_version: str) -> Path:
    """Keep the lock of ``python_version`` as ``uv.lock`` and drop the others; return it."""
    locks = project_dir / LOCKS
    chosen = (locks / f"py{python_version}.lock").replace(project_dir / "uv.lock")
    shutil.rmtree(locks)
    return chosen


def next_steps(project_slug: str, package_name: str, database: str) -> str:
    """Return the instructions printed after generation."""
    steps = [f"cd {project_slug}"]
    if database == "postgresql":
        steps.append(f"createdb {package_name}   # or point DATABASE_URL in .env at your server")
    steps += [
        "uv sync",
        "uv run alembic upgrade head",
        f"uv run uvicorn {package_name}.main:app --reload",
        "uv run pytest --cov",
    ]
    return "Next steps:\n" + "\n".join(f"  {step}" for step in steps)


def main() -> int:
    """Drop the unchosen domain, keep the chosen lock, write the environment files and print
    the next steps."""
    project_dir = Path.cwd()
    remove_paths(unchosen_domain_paths(project_dir, EXAMPLE_DOMAIN, PACKAGE_NAME))
    select_lock(project_dir, PYTHON_VERSION)
    write_env_files(project_dir, DATABASE_URL)
    print(next_steps(PROJECT_SLUG, PACKAGE_NAME, DATABASE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
