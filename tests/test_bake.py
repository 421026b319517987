"""Bake every option combination and hold each result to the same bar.

For each ``example_domain`` x ``database`` x ``python_version`` (the ``--no-input`` default is
the first of them, byte for byte):
the bake succeeds, leaves no template syntax, holds the example domain only when chosen,
its uv.lock matches its pyproject.toml (`uv lock --check`), `uv sync --locked` makes its
environment on that Python version (3.14 and 3.15, which this machine's Debian lacks, in
the cached Debian sid roots of tests/python_root.py), its pre-commit hooks (ruff, ruff
format, mypy --strict) pass. Its own test suite passes on the database it was made for, so
with the default example domain on the oldest Python (on in-memory SQLite and on
PostgreSQL, which runs every test) and on the newest (PostgreSQL), on the default one in
tests/test_github.py, and the other domain's on the default Python on both
(``runs_its_suite_here``), with the coverage gate where the README runs it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.licenses import canonicalize_license_expression

from tests.helpers import (
    NEWEST_PYTHON,
    OLDEST_PYTHON,
    OPTIONS,
    HostCookies,
    PostgresServer,
    clean_env,
    on_python,
    run,
    uv_env,
    uv_python,
    version_key,
)

COMBINATIONS = [
    {"database": database, "python_version": version, "example_domain": domain}
    for domain in OPTIONS["example_domain"]
    for database in OPTIONS["database"]
    for version in OPTIONS["python_version"]
]
BAKES = COMBINATIONS
BAKE_IDS = [f"{c['example_domain']}-{c['database']}-py{c['python_version']}" for c in BAKES]
MEETINGS_FILES = [
    *(f"src/{{package}}/meetings/{name}.py" for name in ("models", "schemas", "service", "router")),
    *(
        f"tests/meetings/test_{name}.py"
        for name in ("rooms", "sessions", "transcripts", "summaries", "concurrency", "migrations")
    ),
    "migrations/versions/2026_11_27_2152-3a5c1e9d7b20_meetings.py",
    "migrations/versions/2026_11_27_2152-8f2d4b6a1c93_summary_kinds.py",
    "migrations/versions/2026_12_06_1730-7c1f3a9e2d58_summary_kinds_validated.py",
    "migrations/versions/2026_12_06_1731-5d7e2c9a4b16_summaries_by_kind.py",
    "migrations/versions/2026_12_06_1923-dbfa39f6e853_idempotent_requests.py",
]
# GitHub Actions' ${{ }} expressions are not Jinja leftovers.
TEMPLATE_SYNTAX = re.compile(r"(?<!\$)\{\{|\{%|cookiecutter\.")
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


# Each bake's tests stay on one xdist worker (--dist loadgroup), which syncs it once.
BAKE_PARAMS = [
    pytest.param(bake, id=name, marks=pytest.mark.xdist_group(name))
    for bake, name in zip(BAKES, BAKE_IDS, strict=True)
]


def runs_its_suite_here(bake: dict[str, str]) -> bool:
    """Whether this module runs the suite of ``bake``.

    The Python version and the example domain do not meet in the generated code, and a run
    on PostgreSQL runs every test (the SQLite file tests among them) where one on in-memory
    SQLite leaves the postgres_only ones out. So the default domain (meetings: every test of
    the core and the domain's) runs its suite on the oldest and the newest Python offered,
    on PostgreSQL, and on in-memory SQLite too on the oldest (the harness's other path, on
    the oldest sqlite3 module offered); a Python in between is bounded by those two, and
    its bake is synced and type-checked on it all the same. The other domain runs its suite
    on the default Python, on both databases. The default bake's suite (the first domain
    and Python) runs in tests/test_github.py, among every CI job of that bake, on SQLite
    (coverage gate) and on PostgreSQL, and not again here.
    """
    default_domain = bake["example_domain"] == OPTIONS["example_domain"][0]
    default_python = bake["python_version"] == OPTIONS["python_version"][0]
    if not default_domain:
        return default_python
    if bake["python_version"] == OLDEST_PYTHON:
        return True
    return bake["python_version"] == NEWEST_PYTHON and bake["database"] == "postgresql"


SUITE_PARAMS = [
    param for param, bake in zip(BAKE_PARAMS, BAKES, strict=True) if runs_its_suite_here(bake)
]


@pytest.fixture(scope="module", params=BAKE_PARAMS)
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


# What the tools make in a bake (uv sync, pre-commit, the suites), not what the bake wrote.
MADE_BY_TOOLS = {".venv", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}


def text_files(root: Path) -> list[Path]:
    """The files the bake wrote (the tools' output may already be there)."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file()
        and MADE_BY_TOOLS.isdisjoint(path.relative_to(root).parts)
        and path.suffix != ".db"
        and not path.name.startswith(".coverage")
        and path.name != "uv.lock"
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
        "LICENSE",
        ".pre-commit-config.yaml",
        ".gitignore",
        ".env",
        ".env.example",
        "alembic.ini",
        "migrations/env.py",
        "migrations/script.py.mako",
        "migrations/lint.py",
        "migrations/versions",
        ".squawk.toml",
        f"src/{baked.package}/__init__.py",
        f"src/{baked.package}/py.typed",
        f"src/{baked.package}/main.py",
        f"src/{baked.package}/core/config.py",
        *(
            f"src/{baked.package}/core/database/{name}.py"
            for name in (
                *("__init__", "engine", "session", "replicas"),
                *("sqlite", "base", "mixins"),
            )
        ),
        "tests/conftest.py",
        "tests/fixtures.py",
        "tests/test_main.py",
        *(
            f"tests/core/database/test_{name}.py"
            for name in (
                *("engine", "session", "read_session", "replicas"),
                *("liveness", "sqlite", "mixins"),
            )
        ),
    ]
    assert [name for name in expected if not (baked.path / name).exists()] == []


def test_the_database_layer_stays_small_enough_to_read_before_each_upgrade(
    baked: Baked,
) -> None:
    # The budget a team reads before every upgrade: 450 lines without the read replicas,
    # 600 with them, and a facade of at most 10 names.
    package = baked.path / "src" / baked.package / "core" / "database"
    lines = {path.name: len(path.read_text().splitlines()) for path in package.glob("*.py")}
    exported = ast.literal_eval(
        next(
            node.value
            for node in ast.parse((package / "__init__.py").read_text()).body
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
        )
    )
    assert sum(lines.values()) - lines["replicas.py"] <= 450, lines
    assert sum(lines.values()) <= 600, lines
    assert len(exported) <= 10, exported


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
        if path.is_dir()
        and not any(path.iterdir())
        and MADE_BY_TOOLS.isdisjoint(path.relative_to(baked.path).parts)
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


def in_bake(baked: Baked, command: list[str], env: dict[str, str]) -> list[str]:
    """``command`` run with the bake's own Python: here, or in the Debian root that has it."""
    return on_python(baked.python_version, baked.path, command, env)


def test_bake_pins_its_python_and_ships_a_lock_that_matches_its_pyproject(baked: Baked) -> None:
    assert (baked.path / ".python-version").read_text() == f"{baked.python_version}\n"
    lock = tomllib.loads((baked.path / "uv.lock").read_text())
    assert lock["requires-python"] == f">={baked.python_version}"
    project = [package for package in lock["package"] if package["source"] == {"editable": "."}]
    assert [package["name"] for package in project] == [baked.path.name.replace("_", "-")]
    assert not (baked.path / "uv-locks").exists()
    env = uv_env()
    run(in_bake(baked, ["uv", "lock", "--check"], env), cwd=baked.path, env=env)


def sync(baked: Baked) -> None:
    """Make the bake's own environment with ``uv sync --locked``, on the Python it asked for:
    exactly what its uv.lock pins."""
    env = uv_env()
    command = ["uv", "sync", "--locked", *uv_python(baked.python_version)]
    run(in_bake(baked, command, env), cwd=baked.path, env=env)


@pytest.fixture(scope="module")
def synced(baked: Baked) -> Baked:
    """The bake with its own environment (``sync``).

    mypy's cache is shared between the bakes of one Python version on this worker.
    """
    sync(baked)
    return baked


def bake_env(baked: Baked, tmp_path_factory: pytest.TempPathFactory, **env: str) -> dict[str, str]:
    """The environment for a baked project's own commands (uv, its mypy cache, no home)."""
    shared = tmp_path_factory.getbasetemp()
    return uv_env(
        MYPY_CACHE_DIR=str(shared / f"mypy-cache-{baked.python_version}"),
        PRE_COMMIT_HOME=str(shared / "pre-commit"),
        **env,
    )


def test_baked_project_passes_its_pre_commit_hooks(
    synced: Baked, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # ruff check, ruff format and mypy --strict, as a developer's commit runs them.
    env = bake_env(synced, tmp_path_factory)
    run(["git", "init", "-q"], cwd=synced.path, env=env)
    run(["git", "add", "-A"], cwd=synced.path, env=env)
    command = ["uv", "run", "--no-sync", "pre-commit", "run", "--all-files"]
    command += ["--show-diff-on-failure"]
    result = run(in_bake(synced, command, env), cwd=synced.path, env=env)
    for hook in ("ruff check", "ruff format", "mypy --strict"):
        assert re.search(rf"^{re.escape(hook)}\.+Passed$", result.stdout, re.M), result.stdout
    # squawk on the revisions' SQL, where there are revisions.
    squawked = "Passed" if synced.example_domain == "meetings" else r"\(no files to check\)Skipped"
    assert re.search(rf"^squawk \(migrations' SQL\)\.+{squawked}$", result.stdout, re.M), (
        result.stdout
    )


def test_coverage_sees_greenlets_with_the_fastest_core_its_python_allows(synced: Baked) -> None:
    # SQLAlchemy runs driver calls in greenlets. Before Python 3.14 only the C tracer, asked
    # for concurrency = ["greenlet"], sees them; from 3.14 coverage's default measurement,
    # sys.monitoring, sees them and takes a fifth to a quarter off the default bake's
    # `pytest --cov`, but that setting would make it fall back to the tracer.
    expected = "sysmon" if version_key(synced.python_version) >= (3, 14) else "ctrace"
    command = ["uv", "run", "--no-sync", "coverage", "run", "--debug=core"]
    command += ["--data-file=.coverage.core", "-m", "platform"]  # in the bake, then removed
    env = uv_env()
    result = run(in_bake(synced, command, env), cwd=synced.path, env=env, timeout=120)
    (synced.path / ".coverage.core").unlink()
    used = re.findall(r"^core\.py: Using core=(\w+)$", result.stdout + result.stderr, re.M)
    assert used == [expected], result.stdout + result.stderr


def run_suite(baked: Baked, tmp_path_factory: pytest.TempPathFactory, **env: str) -> int:
    """Run the baked project's own tests in its own environment; return how many passed
    (none may skip).

    One process (-n0): the template's suite already runs bakes side by side. On SQLite the
    postgres_only tests are deselected; on PostgreSQL every test runs. The coverage gate is
    checked on SQLite with the default Python (the README's command): the code it measures
    is the same on the others, where coverage's tracer would only double the cost.
    """
    on_postgres = "TEST_DATABASE_URL" in env
    gate = not on_postgres and baked.python_version == OPTIONS["python_version"][0]
    command = [
        *("uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", "-n0"),
        *(["--cov"] if gate else []),
    ]
    full_env = bake_env(baked, tmp_path_factory, **env)
    result = run(in_bake(baked, command, full_env), cwd=baked.path, env=full_env, timeout=900)
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed" not in summary
    assert "skipped" not in summary
    if on_postgres:
        assert "deselected" not in summary
    if gate:
        assert "Required test coverage of 95" in result.stdout
    match = PASSED.search(summary)
    assert match is not None, summary
    return int(match.group(1))


@pytest.mark.parametrize("baked", SUITE_PARAMS, indirect=True)
def test_baked_suite_passes_on_the_database_it_was_made_for(
    synced: Baked, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A bake's code is the same whichever database it defaults to (only the defaults
    # differ), so each runs its suite on its own: on in-memory SQLite and on PostgreSQL,
    # each bake once.
    env = {}
    if synced.database == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        env["TEST_DATABASE_URL"] = postgres.async_url()
    assert run_suite(synced, tmp_path_factory, **env) >= MINIMUM_TESTS[synced.example_domain]


def test_one_test_file_runs_without_the_coverage_gate(host_cookies: HostCookies) -> None:
    # The gate belongs to the full run (`pytest --cov`); one file covers too little to pass it.
    result = host_cookies.bake(extra_context={"project_name": "One File"})
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


def test_a_parallel_runs_controller_imports_nothing_of_the_service(
    host_cookies: HostCookies,
) -> None:
    # The controller of `pytest -n` loads tests/conftest.py but runs no test; the app and
    # the fixtures load in the workers only, so that it starts them sooner.
    result = host_cookies.bake(extra_context={"project_name": "Light Controller"})
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    heavy = ("light_controller", "sqlalchemy", "fastapi", "tests.fixtures")
    probe = (
        "import sys, tests.conftest; "
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    output = run(
        [sys.executable, "-c", probe],
        cwd=project,
        env=clean_env(PYTHONPATH=f"{project / 'src'}:{project}"),
    )
    assert output.stdout.strip() == "[]"


LICENSE_FIRST_LINES = {
    "MIT": "MIT License",
    "Apache-2.0": "Apache License",
    "BSD-3-Clause": "BSD 3-Clause License",
    "Proprietary": "All rights reserved.",
}


@pytest.mark.parametrize("license_id", OPTIONS["license"])
def test_bake_licenses_the_code_as_chosen(cookies_session: Any, license_id: str) -> None:
    result = cookies_session.bake(
        extra_context={"license": license_id, "author_name": "Ada Lovelace"}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    text = (project / "LICENSE").read_text()
    assert LICENSE_FIRST_LINES[license_id] in text.strip().splitlines()[0]
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    expression = "LicenseRef-Proprietary" if license_id == "Proprietary" else license_id
    assert metadata["license"] == canonicalize_license_expression(expression)
    assert metadata["license-files"] == ["LICENSE"]
    if license_id == "Apache-2.0":
        assert "END OF TERMS AND CONDITIONS" in text
    else:
        assert "Ada Lovelace" in text
    private = "Private :: Do Not Upload" in metadata.get("classifiers", [])
    assert private is (license_id == "Proprietary")


def test_the_no_input_default_is_the_first_choice_of_every_option(cookies_session: Any) -> None:
    default = Path(cookies_session.bake().project_path)
    first = Path(cookies_session.bake(extra_context=BAKES[0]).project_path)
    assert BAKES[0] == {key: OPTIONS[key][0] for key in BAKES[0]}
    files = sorted(str(path.relative_to(default)) for path in text_files(default))
    assert files == sorted(str(path.relative_to(first)) for path in text_files(first))
    assert all((default / name).read_bytes() == (first / name).read_bytes() for name in files)
