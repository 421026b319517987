"""pytest-alembic's four default tests pass against a bake's own engine, on both databases.

The tool hands env.py the service's pooled AsyncEngine and runs many Alembic commands on it,
each on an event loop of its own (a pooled connection of one loop is unusable in the next).
Its plugin fails at collection on pytest 9.2 where a tests/conftest.py exists ("'TestCollector'
object has no attribute '_nodeid'"), so, as its documentation allows, its tests are
imported into a module of their own and its tests path points elsewhere.

pytest-alembic is installed for this test only, beside the dev group rather than in it: with
the plugin installed, every pytest run in that environment (the template's suite, and a bake's
suite run there) would fail at collection.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import HostCookies, PostgresServer, clean_env, run, skip_or_fail

pytestmark = pytest.mark.slow
PYTEST_ALEMBIC = "pytest-alembic>=0.13.1,<1"

PLUGIN_TESTS = '''
"""pytest-alembic's default tests on the service's own engine (written by the template's test).

Run without tests/fixtures.py, whose test tables would join the models.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from {package}.core.database.engine import engine_from_settings

from tests.harness import postgres_server_url, settings_for, temporary_database
from tests.migrating import alembic_config as project_alembic_config

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config():
    return project_alembic_config()


@pytest.fixture
async def alembic_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The engine the service makes (pooled; foreign keys on for SQLite), on an empty database."""
    server_url = postgres_server_url()
    if server_url is None:
        url = f"sqlite+aiosqlite:///{{tmp_path / 'plugin.db'}}"
        engine = engine_from_settings(settings_for(url))
        yield engine
        await engine.dispose()
        return
    async with temporary_database(server_url) as database:
        engine = engine_from_settings(settings_for(database.render_as_string(hide_password=False)))
        yield engine
        await engine.dispose()
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding pytest-alembic, for PYTHONPATH."""
    target = tmp_path_factory.mktemp("pytest-alembic")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    installed = subprocess.run(
        [*pip, "--target", str(target), PYTEST_ALEMBIC],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if installed.returncode != 0:
        skip_or_fail(f"cannot install {PYTEST_ALEMBIC}: {installed.stderr[-2000:]}")
    return target


@pytest.fixture(scope="module")
def project(host_cookies: HostCookies) -> Path:
    """A default bake (the meetings domain and its migrations) with the plugin's tests."""
    result = host_cookies.bake(extra_context={"project_name": "Plugin Check"})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    package = result.context["package_name"]
    (path / "tests" / "test_pytest_alembic.py").write_text(PLUGIN_TESTS.format(package=package))
    return path


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_pytest_alembics_default_tests_pass_on_the_services_own_engine(
    project: Path, plugin_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = clean_env(PYTHONPATH=str(plugin_path))
    if backend == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        env["TEST_DATABASE_URL"] = postgres.async_url()
    result = run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n0"),
            *("-p", "no:tests.fixtures", "--alembic-tests-path", "tests/no_such_file.py", "-rA"),
            "tests/test_pytest_alembic.py",
        ],
        cwd=project,
        env=env,
    )
    for name in ("single_head_revision", "upgrade", "model_definitions_match_ddl", "up_down"):
        assert re.search(rf"^PASSED tests/test_pytest_alembic.py::test_{name}", result.stdout, re.M)
    assert "4 passed" in result.stdout
