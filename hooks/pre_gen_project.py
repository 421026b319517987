"""Validate the template answers before anything is rendered.

Each failed check prints one line naming the field, the bad value and what is allowed, and
the hook exits non-zero: cookiecutter then raises FailedHookException and removes the output.
After the errors it says how to re-run from the replay file cookiecutter saved the answers in.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from cookiecutter.config import get_user_config
from cookiecutter.exceptions import CookiecutterException

# Rendered values are read through JSON in a raw ''' string: tojson escapes every quote and
# backslash, so no answer can break out of the literal (a """ string would end early).
ANSWERS: dict[str, str] = {
    "project_name": json.loads(r'''{{ cookiecutter.project_name | tojson }}'''),
    "project_slug": json.loads(r'''{{ cookiecutter.project_slug | tojson }}'''),
    "package_name": json.loads(r'''{{ cookiecutter.package_name | tojson }}'''),
    "description": json.loads(r'''{{ cookiecutter.description | tojson }}'''),
    "author_name": json.loads(r'''{{ cookiecutter.author_name | tojson }}'''),
    "author_email": json.loads(r'''{{ cookiecutter.author_email | tojson }}'''),
}

# Set by cookiecutter's own entry point (CLI or API), which saves every answer to its replay
# file before this hook runs. cruft renders hooks without _repo_dir and saves no replay file,
# so these default to None rather than failing the render.
TEMPLATE: str | None = json.loads(r'''{{ cookiecutter._template | default(none) | tojson }}''')
REPO_DIR: str | None = json.loads(r'''{{ cookiecutter._repo_dir | default(none) | tojson }}''')
CHECKOUT: str | None = json.loads(r'''{{ cookiecutter._checkout | default(none) | tojson }}''')

SLUG_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
PACKAGE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
MAX_TEXT_LENGTH = 200
MAX_NAME_LENGTH = 40

# Import names the generated project depends on or creates next to its package, and the
# standard library's "test" package (absent from sys.stdlib_module_names): a package with
# one of these names would shadow the real module.
RESERVED_IMPORT_NAMES = frozenset(
    {
        "aiosqlite",
        "alembic",
        "anyio",
        "asyncpg",
        "coverage",
        "fastapi",
        "greenlet",
        "httpx",
        "migrations",
        "mypy",
        "pydantic",
        "pydantic_settings",
        "pytest",
        "pytest_asyncio",
        "ruff",
        "sqlalchemy",
        "starlette",
        "test",
        "tests",
        "uvicorn",
    }
)


def text_error(field: str, value: str) -> str | None:
    """Return why a free-text answer is unusable, or None if it is fine."""
    if not value.strip():
        return f"{field} is empty; give a short non-empty text"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return (
            f"{field} {value!r} contains a control character (newline, tab, ...); "
            "use one plain line"
        )
    if not any(char.isalnum() for char in value):
        return f"{field} {value!r} has no letter or digit; use some letters or digits"
    if len(value) > MAX_TEXT_LENGTH:
        return f"{field} is {len(value)} characters long; keep it to {MAX_TEXT_LENGTH} or fewer"
    return None


def slug_error(slug: str) -> str | None:
    """Return why ``slug`` is not a valid project slug, or None if it is fine."""
    if len(slug) > MAX_NAME_LENGTH:
        return (
            f"project_slug {slug!r} is {len(slug)} characters long; use at most {MAX_NAME_LENGTH}"
        )
    if SLUG_PATTERN.fullmatch(slug):
        return None
    return (
        f"project_slug {slug!r} is invalid; use lowercase ASCII letters, digits and single "
        "'-' or '_' separators, starting with a letter (e.g. 'my-service')"
    )


def package_error(name: str) -> str | None:
    """Return why ``name`` cannot be the Python package name, or None if it is fine."""
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"package_name {name!r} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}"
        )
    if not PACKAGE_PATTERN.fullmatch(name):
        return (
            f"package_name {name!r} is invalid; use a lowercase ASCII identifier: letters, "
            "digits and '_', starting with a letter (e.g. 'my_service')"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return (
            f"package_name {name!r} is a Python keyword; "
            f"choose another name (e.g. '{name}_service')"
        )
    if name in sys.stdlib_module_names:
        return (
            f"package_name {name!r} shadows the standard-library module of that name; "
            f"choose another name (e.g. '{name}_service')"
        )
    if name in RESERVED_IMPORT_NAMES:
        return (
            f"package_name {name!r} shadows the import name of a dependency or project folder; "
            f"choose another name (e.g. '{name}_service')"
        )
    return None


def email_error(email: str) -> str | None:
    """Return why ``email`` does not look like an e-mail address, or None if it does."""
    if EMAIL_PATTERN.fullmatch(email):
        return None
    return f"author_email {email!r} is not an e-mail address; use the form 'name@example.com'"


def find_errors(answers: dict[str, str]) -> list[str]:
    """Return one message per invalid answer, in prompt order."""
    errors = [
        text_error(field, answers[field])
        for field in ("project_name", "description", "author_name")
    ]
    errors += [
        slug_error(answers["project_slug"]),
        package_error(answers["package_name"]),
        email_error(answers["author_email"]),
    ]
    return [error for error in errors if error is not None]


def user_replay_dir() -> Path | None:
    """Return the replay_dir of the user config cookiecutter finds without --config-file."""
    try:
        return Path(get_user_config()["replay_dir"])
    except (CookiecutterException, OSError):
        return None


def find_replay_file(replay_dir: Path, saved: dict[str, Any]) -> Path | None:
    """Return the newest replay file in ``replay_dir`` that holds ``saved``, or None."""
    candidates = replay_dir.glob("*.json") if replay_dir.is_dir() else []
    for path in sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True):
        try:
            context = json.loads(path.read_text(encoding="utf-8"))["cookiecutter"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if all(context.get(key) == value for key, value in saved.items()):
            return path
    return None


def rerun_command(replay_file: str, template: str, checkout: str | None) -> str:
    """Return the shell command that generates again from ``replay_file``."""
    args = ["cookiecutter", "--replay-file", replay_file]
    if checkout:
        args += ["--checkout", checkout]
    return shlex.join([*args, template])


def replay_file_name(repo_dir: str) -> str:
    """Return the name cookiecutter gives the replay file of the template in ``repo_dir``."""
    name = Path(os.path.normpath(repo_dir)).name
    return f"{name}.json" if name not in ("", "..") else "<template folder name>.json"


def replay_hint(
    replay_file: Path | None, repo_dir: str, template: str, checkout: str | None
) -> str:
    """Return how to correct the answers in the replay file and generate again."""
    if replay_file is None:
        name = replay_file_name(repo_dir)
        where = (
            f"cookiecutter saved all your answers in {name} in the replay_dir of your "
            "cookiecutter config (default ~/.cookiecutter_replay/)."
        )
        command = rerun_command(f"<replay_dir>/{name}", template, checkout)
    else:
        where = f"cookiecutter saved all your answers in {shlex.quote(str(replay_file))}."
        command = rerun_command(str(replay_file), template, checkout)
    return (
        f"{where}\n"
        "Correct the answers named above in that file (and values derived from them there, "
        "such as the database name in __database_url), then generate again without typing "
        f"the others:\n  {command}"
    )


def main() -> int:
    """Print every invalid answer on its own line, then how to re-run; return 1 if any."""
    errors = find_errors(ANSWERS)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    if errors and TEMPLATE is not None and REPO_DIR is not None:
        saved = {**ANSWERS, "_template": TEMPLATE, "_repo_dir": REPO_DIR}
        replay_dir = user_replay_dir()
        replay_file = find_replay_file(replay_dir, saved) if replay_dir else None
        print(replay_hint(replay_file, REPO_DIR, TEMPLATE, CHECKOUT), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
