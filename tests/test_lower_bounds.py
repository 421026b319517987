"""The lower bound of every direct dependency of a bake is true.

With ``uv lock --resolution lowest-direct`` every direct dependency, runtime and development,
resolves to the lowest version its range admits; the bake must then pass what CI runs: its
tests on SQLite and on PostgreSQL, ``ruff check``, ``ruff format --check`` and
``mypy --strict``. A range whose floor fails here promises something untrue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, PostgresServer, find_interpreter, run, uv_env

OPTIONS = json.loads((REPO_ROOT / "cookiecutter.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("python_version", [OPTIONS["python_version"][0]], ids=lambda v: f"py{v}")
def test_lowest_direct_dependencies_pass_tests_lint_and_type_checks(
    cookies_session: Any, postgres: PostgresServer, tmp_path: Path, python_version: str
) -> None:
    result = cookies_session.bake(
        extra_context={"project_name": "Lowest Direct", "python_version": python_version}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    env = uv_env(MYPY_CACHE_DIR=str(tmp_path / "mypy-cache"))
    run(["uv", "lock", "--resolution", "lowest-direct"], cwd=project, env=env)
    # --frozen: install that resolution exactly (uv sync would otherwise re-resolve).
    interpreter = find_interpreter(python_version)
    run(["uv", "sync", "--frozen", "--python", interpreter], cwd=project, env=env)
    for command in (
        ["ruff", "check"],
        ["ruff", "format", "--check"],
        ["mypy"],
        ["pytest", "-q", "-p", "no:cacheprovider", "-n0", "--cov"],
    ):
        run(["uv", "run", "--frozen", *command], cwd=project, env=env, timeout=900)
    on_postgres = {**env, "TEST_DATABASE_URL": postgres.async_url()}
    suite = run(
        ["uv", "run", "--frozen", "pytest", "-q", "-p", "no:cacheprovider", "-n0"],
        cwd=project,
        env=on_postgres,
        timeout=900,
    )
    assert "deselected" not in suite.stdout.splitlines()[-1]
