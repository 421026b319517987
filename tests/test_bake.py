"""Bake every option combination and hold each result to the same bar.

For the ``--no-input`` default and each ``example_domain`` x ``database`` x ``python_version``:
the bake succeeds, leaves no template syntax, holds the example domain only when chosen,
passes ruff, ruff format and mypy --strict, and its own test suite passes on in-memory SQLite
and on PostgreSQL, run by that Python version.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, PostgresServer, clean_env, run

OPTIONS = json.loads((REPO_ROOT / "cookiecutter.json").read_text())
COMBINATIONS = [
    {"database": database, "python_version": version, "example_domain": domain}
    for domain in OPTIONS["example_domain"]
    for database in OPTIONS["database"]
    for version in OPTIONS["python_version"]
]
BAKES = [{}, *COMBINATIONS]
BAKE_IDS = [
    "default",
    *(f"{c['example_domain']}-{c['database']}-py{c['python_version']}" for c in COMBINATIONS),
]
MEETINGS_FILES = [
    *(f"src/{{package}}/meetings/{name}.py" for name in ("models", "schemas", "service", "router")),
    *(
        f"tests/meetings/test_{name}.py"
        for name in ("rooms", "sessions", "transcripts", "summaries", "concurrency", "migrations")
    ),
    "migrations/versions/2026_11_27_2152-3a5c1e9d7b20_meetings.py",
    "migrations/versions/2026_11_27_2152-8f2d4b6a1c93_summary_kinds.py",
]
TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%|cookiecutter\.")
PASSED = re.compile(r"(\d+) passed")
# The fewest tests each suite holds (a floor, so that a suite cannot silently shrink).
MINIMUM_TESTS = {"none": 80, "meetings": 185}


@dataclass(frozen=True)
class Baked:
    """A baked project and what it was asked for."""

    path: Path
    database: str
    python_version: str
    example_domain: str
    package: str


def find_interpreter(version: str) -> str:
    """A working ``python<version>``: on PATH, or installed by pyenv but not on its PATH."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        versions = Path(root.stdout.strip()) / "versions"
        candidates += sorted(map(str, versions.glob(f"{version}.*/bin/python{version}")))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return candidate
    pytest.fail(f"python{version} is not installed; the template supports it", pytrace=False)


def python_for(version: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interpreter of ``version`` with the template's dev tools (one venv per version)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return Path(sys.executable)
    venv = tmp_path_factory.getbasetemp() / f"venv-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        run([find_interpreter(version), "-m", "venv", str(venv)], cwd=REPO_ROOT)
        run([str(python), "-m", "pip", "install", "-q", "-U", "pip"], cwd=REPO_ROOT)
        run([str(python), "-m", "pip", "install", "-q", "--group", "dev"], cwd=REPO_ROOT)
    return python


@pytest.fixture(scope="module", params=BAKES, ids=BAKE_IDS)
def baked(request: pytest.FixtureRequest, cookies_session: Any) -> Baked:
    result = cookies_session.bake(extra_context=request.param)
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    context = result.context
    return Baked(
        path=Path(result.project_path),
        database=context["database"],
        python_version=context["python_version"],
        example_domain=context["example_domain"],
        package=context["package_name"],
    )


def text_files(root: Path) -> list[Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".db"
    ]


def test_bake_leaves_no_template_syntax(baked: Baked) -> None:
    leftovers = [
        str(path.relative_to(baked.path))
        for path in text_files(baked.path)
        if TEMPLATE_SYNTAX.search(path.read_text(encoding="utf-8"))
    ]
    assert leftovers == []


def test_bake_has_the_documented_layout(baked: Baked) -> None:
    expected = [
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".env",
        ".env.example",
        "alembic.ini",
        "migrations/env.py",
        "migrations/script.py.mako",
        "migrations/versions",
        f"src/{baked.package}/__init__.py",
        f"src/{baked.package}/py.typed",
        f"src/{baked.package}/main.py",
        f"src/{baked.package}/core/config.py",
        *(
            f"src/{baked.package}/core/database/{name}.py"
            for name in ("__init__", "engine", "session", "liveness", "sqlite", "base", "mixins")
        ),
        "tests/conftest.py",
        "tests/test_main.py",
        *(
            f"tests/core/database/test_{name}.py"
            for name in ("engine", "session", "read_session", "liveness", "sqlite", "mixins")
        ),
    ]
    assert [name for name in expected if not (baked.path / name).exists()] == []


def test_bake_holds_the_meetings_domain_only_when_chosen(baked: Baked) -> None:
    files = [name.format(package=baked.package) for name in MEETINGS_FILES]
    present = [name for name in files if (baked.path / name).exists()]
    if baked.example_domain == "meetings":
        assert present == files
        main = (baked.path / "src" / baked.package / "main.py").read_text()
        assert "add_meetings_api(app)" in main
        assert "meetings import" in (baked.path / "migrations" / "env.py").read_text()
    else:
        assert present == []
        mentions = [
            str(path.relative_to(baked.path))
            for path in text_files(baked.path)
            if "meeting" in path.read_text(encoding="utf-8").lower()
        ]
        assert mentions == []
        assert sorted((baked.path / "migrations" / "versions").iterdir()) == [
            baked.path / "migrations" / "versions" / ".gitkeep"
        ]


def test_bake_leaves_no_empty_folder(baked: Baked) -> None:
    empty = [
        str(path.relative_to(baked.path))
        for path in baked.path.rglob("*")
        if path.is_dir() and not any(path.iterdir())
    ]
    assert empty == []


def test_bake_selects_the_chosen_database(baked: Baked) -> None:
    env = (baked.path / ".env").read_text()
    assert env == (baked.path / ".env.example").read_text()
    project = tomllib.loads((baked.path / "pyproject.toml").read_text())["project"]
    if baked.database == "postgresql":
        url = f"postgresql+asyncpg://postgres:postgres@localhost:5432/{baked.package}"
        assert f"DATABASE_URL={url}\n" in env
    else:
        assert "DATABASE_URL=sqlite+aiosqlite:///./app.db\n" in env
    # Both drivers, whatever the default: switching is DATABASE_URL alone.
    drivers = {dep.split(">")[0] for dep in project["dependencies"]} & {"asyncpg", "aiosqlite"}
    assert drivers == {"asyncpg", "aiosqlite"}
    assert "postgres" not in project.get("optional-dependencies", {})
    assert project["requires-python"] == f">={baked.python_version}"
    # SQLAlchemy 2.1 installs greenlet, needed by every async call, only with [asyncio].
    assert any(dep.startswith("sqlalchemy[asyncio]") for dep in project["dependencies"])
    assert ".env\n" in (baked.path / ".gitignore").read_text()


def test_baked_project_passes_ruff_check(baked: Baked) -> None:
    run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=baked.path)


def test_baked_project_passes_ruff_format_check(baked: Baked) -> None:
    run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], cwd=baked.path)


def test_baked_project_passes_mypy_strict(
    baked: Baked, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.getbasetemp() / "mypy-cache"
    result = run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache)], cwd=baked.path
    )
    assert "Success: no issues found" in result.stdout


def run_suite(baked: Baked, python: Path, **env: str) -> int:
    """Run the baked project's own tests; return how many passed (none may skip).

    On SQLite the postgres_only tests are deselected; on PostgreSQL all run.
    """
    result = run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov"],
        cwd=baked.path,
        env=clean_env(**env),
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed" not in summary
    assert "skipped" not in summary
    if "TEST_DATABASE_URL" in env:
        # On PostgreSQL every test runs, the postgres_only ones included.
        assert "deselected" not in summary
    assert "Required test coverage of 95" in result.stdout
    match = PASSED.search(summary)
    assert match is not None, summary
    return int(match.group(1))


def test_baked_suite_passes_on_in_memory_sqlite(
    baked: Baked, tmp_path_factory: pytest.TempPathFactory
) -> None:
    python = python_for(baked.python_version, tmp_path_factory)
    assert run_suite(baked, python) >= MINIMUM_TESTS[baked.example_domain]


def test_baked_suite_passes_on_postgresql(
    baked: Baked, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    python = python_for(baked.python_version, tmp_path_factory)
    passed = run_suite(baked, python, TEST_DATABASE_URL=postgres.async_url())
    assert passed >= MINIMUM_TESTS[baked.example_domain]


def test_one_test_file_runs_without_the_coverage_gate(cookies_session: Any) -> None:
    # The gate belongs to the full run (`pytest --cov`); one file covers too little to pass it.
    result = cookies_session.bake(extra_context={"project_name": "One File"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    output = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_main.py"],
        cwd=project,
        env=clean_env(),
        timeout=300,
    )
    assert " passed" in output.stdout
    assert "coverage" not in output.stdout.lower()
