"""The lower bound of every direct dependency of a bake is true.

With ``uv lock --resolution lowest-direct`` every direct dependency, runtime and development,
resolves to the lowest version its range admits; the bake must then pass what CI runs: its
tests (on PostgreSQL, where every test runs, the SQLite file tests among them, with the
coverage gate, which needs coverage's floor), ``ruff check``, ``ruff format --check`` and
``mypy --strict``. A range whose floor fails here promises something untrue. On the lowest
and the newest Python offered (the floors must have wheels, or build, there too); a Python
the host lacks runs in its Debian root (tests/python_root.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    NEWEST_PYTHON,
    OLDEST_PYTHON,
    PostgresServer,
    on_python,
    run,
    uv_env,
    uv_python,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "python_version",
    [
        OLDEST_PYTHON,
        NEWEST_PYTHON,
    ],
    ids=lambda v: f"py{v}",
)
def test_lowest_direct_dependencies_pass_tests_lint_and_type_checks(
    cookies_session: Any, postgres: PostgresServer, tmp_path: Path, python_version: str
) -> None:
    result = cookies_session.bake(
        extra_context={"project_name": "Lowest Direct", "python_version": python_version}
    )
    assert result.exit_code == 0, result.exception
    project = Path(result.project_path)
    env = uv_env(MYPY_CACHE_DIR=str(tmp_path / "mypy-cache"))

    def bake_run(command: list[str], **extra: str) -> str:
        """Run ``command`` in the bake, on its Python; return its output."""
        full_env = {**env, **extra}
        command = on_python(python_version, project, command, full_env)
        return run(command, cwd=project, env=full_env, timeout=900).stdout

    bake_run(["uv", "lock", "--resolution", "lowest-direct"])
    # --frozen: install that resolution exactly (uv sync would otherwise re-resolve).
    bake_run(["uv", "sync", "--frozen", *uv_python(python_version)])
    for command in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]):
        bake_run(["uv", "run", "--frozen", *command])
    pytest_command = ["pytest", "-q", "-p", "no:cacheprovider", "-n0", "--cov"]
    output = bake_run(
        ["uv", "run", "--frozen", *pytest_command], TEST_DATABASE_URL=postgres.async_url()
    )
    assert "Required test coverage of 95" in output
    assert "deselected" not in output.splitlines()[-1]
